"""Security end to end: link delivery policy, access control, and a canary over a full flow.

The policy and access scenarios run in process (`start_scenario`); the canary runs the real
process, whose whole log file (not only what goes through logging) must hold no secret.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.testing import FAST_WATCH, SIGNING_SECRET, BotProcess, async_wait_until, command
from bot.testing import finished_posts as finished_list
from tests.conftest import ASANA_TOKEN, StartScenario

GID = "1200000000000321"
CANARY = "https://canary.example.test/export.zip?X-Amz-Signature=SECURITYCANARY99"


def finished_posts(slack: FakeSlack) -> dict[str, dict[str, Any]]:
    """The finished post of each channel, by channel."""
    return {post["channel"]: post for post in finished_list(slack)}


def start(env: dict[str, str], tmp_path: Path, **extra: str) -> BotProcess:
    return BotProcess(tmp_path, {**env, **FAST_WATCH, **extra}).start()


CHANNELS = {
    "CPUB": {},
    "GPRIV": {"is_private": True},
    "DIM": {"is_im": True},
    "GEXT": {"is_private": True, "is_ext_shared": True},
}


@pytest.mark.parametrize(
    ("policy", "with_link"),
    [
        ("private", {"GPRIV", "DIM"}),
        ("button", set()),
        ("anywhere", set(CHANNELS)),
    ],
)
async def test_link_policy_decides_where_links_are_posted(
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    start_scenario: StartScenario,
    policy: str,
    with_link: set[str],
) -> None:
    # case does not matter; private is the default
    bot = await start_scenario(**({} if policy == "private" else {"LINK_POLICY": policy.upper()}))
    for channel, flags in CHANNELS.items():
        fake_slack.add_channel(channel, **flags)
    fake_asana.set_export(GID, "started", download_url=CANARY)
    for channel in CHANNELS:
        assert "Watching" in (await bot.command(GID, channel=channel))["text"]
    fake_asana.set_state(GID, "finished")
    await bot.run_until(lambda: len(finished_posts(fake_slack)) == len(CHANNELS))
    for channel, post in finished_posts(fake_slack).items():
        shown = CANARY in json.dumps(post)
        assert shown is (channel in with_link), (policy, channel)
        buttons = [
            e["action_id"] for b in post["blocks"] if b["type"] == "actions" for e in b["elements"]
        ]
        assert "fresh_link" in buttons, "everyone can get a private fresh link"
    # A lookup of the finished export follows the same policy.
    public_answer = await bot.command(GID, channel="CPUB")
    assert (CANARY in json.dumps(public_answer)) is ("CPUB" in with_link)
    assert "SECURITYCANARY99" not in bot.logs()


async def test_access_control_refuses_politely_and_logs(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    bot = await start_scenario(ALLOWED_USERS="U0ALLOWED", ALLOWED_CHANNELS="C0OK,G0OK")
    fake_asana.set_export(GID, "finished", download_url=CANARY)
    fake_slack.add_channel("G0OK", is_private=True)
    refused = [
        await bot.command(GID, user_id="U0STRANGER", channel="C0OK"),
        await bot.command(GID, user_id="U0ALLOWED", channel="C0ELSEWHERE"),
        await bot.command("list", user_id="U0STRANGER", channel="C0OK"),
        await bot.command(f"watch {GID}", user_id="U0STRANGER", channel="C0OK"),
    ]
    for answer in refused:
        assert answer["response_type"] == "ephemeral"
        assert "Sorry" in answer["text"] and CANARY not in json.dumps(answer)
    assert fake_asana.requests == [], "refused before Asana is asked"
    assert "looks up an export" in (await bot.command("help", user_id="U0STRANGER"))["text"]

    allowed = await bot.command(GID, user_id="U0ALLOWED", channel="G0OK")
    assert allowed["response_type"] == "in_channel" and CANARY in json.dumps(allowed)

    response_url = fake_slack.new_response_url()
    click = await bot.click(
        action_id="fresh_link",
        value=GID,
        user_id="U0STRANGER",
        channel_id="G0OK",
        response_url=response_url,
    )
    assert click.status == 200
    await async_wait_until(lambda: fake_slack.responses(response_url), timeout=5)
    (reply,) = fake_slack.responses(response_url)
    assert "Sorry" in reply.body["text"] and CANARY not in json.dumps(reply.body)
    logs = bot.logs()
    assert "refused" in logs and "U0STRANGER" in logs
    assert ASANA_TOKEN not in logs and "SECURITYCANARY99" not in logs


def test_canary_token_and_link_never_leak(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot_env: dict[str, str], tmp_path: Path
) -> None:
    """A full flow with every error path a user can see; the token and link appear nowhere
    but in the messages meant to carry the link."""
    bot = start(bot_env, tmp_path, LINK_POLICY="anywhere")
    shown: list[str] = []
    try:
        fake_asana.set_export(GID, "started", download_url=CANARY)
        shown.append(json.dumps(command(bot, fake_slack, GID)))
        for status in (400, 401, 402, 403, 404, 500, 503):
            fake_asana.fail(status, gid="404404", times=20, phrase=f"phrase {ASANA_TOKEN}")
            shown.append(json.dumps(command(bot, fake_slack, "404404")))
            fake_asana.clear_faults()
        fake_asana.fail(200, gid="505505", malformed=True, times=20)
        shown.append(json.dumps(command(bot, fake_slack, "505505")))
        fake_asana.set_state(GID, "finished")
        fake_slack.wait_for(lambda: finished_posts(fake_slack), timeout=15)
    finally:
        bot.stop()
    for text in shown:
        assert ASANA_TOKEN not in text and "SECURITYCANARY99" not in text
    for call in fake_slack.calls:
        if (call.body.get("metadata") or {}).get("event_type") != "asana_export_finished":
            assert "SECURITYCANARY99" not in json.dumps(call.body), call.method
        assert ASANA_TOKEN not in json.dumps(call.body)
    logs = bot.logs()
    assert ASANA_TOKEN not in logs and "SECURITYCANARY99" not in logs
    assert fake_slack.bot_token not in logs and SIGNING_SECRET not in logs
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'bot.db'}")
    with engine.connect() as conn:
        dump = [
            repr(tuple(row))
            for table in sa.inspect(conn).get_table_names()
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"'))
        ]
    engine.dispose()
    assert any(GID in row for row in dump)
    assert not any("SECURITYCANARY99" in row or ASANA_TOKEN in row for row in dump)
