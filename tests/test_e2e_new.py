"""`/asana-export new`: starting an organization export from Slack, and who may.

In process (`scenario`: the real runtime and Bolt app against the fake Asana and fake Slack over
real HTTP): a started export is watched here with a card and one finished post; each refusal of
Asana is explained and starts nothing; a POST that may have reached Asana is never repeated; an
export of the organization still running is offered instead (a button watches it, `--force`
starts another); a Slack retry or a replayed request starts one export; and the admin rule
(ADMIN_USERS, else the workspace's admins and owners from users.info). One real-process test
runs `new` -> card -> finished post through the console script.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from bot.asana.client import OPT_FIELDS
from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.demo.signing import form_body, signed_headers, slash_command_form
from bot.testing import FAST_WATCH, BotProcess, command, finished_posts, posts, text_of, wait_until
from bot.testing.process import SIGNING_SECRET
from bot.testing.scenario import Scenario
from tests.conftest import StartScenario

ORG = "4200000000000042"
ADMIN = "U0ADMIN"
NEW = {"LINK_POLICY": "anywhere", "ASANA_ORGANIZATION_GID": ORG, "ADMIN_USERS": ADMIN}


@pytest.fixture
async def sbot(start_scenario: StartScenario, fake_asana: FakeAsana) -> Scenario:
    fake_asana.set_organization(ORG, "Acme")
    return await start_scenario(**NEW)


def creates(asana: FakeAsana) -> list[Any]:
    return [r for r in asana.requests if r.method == "POST"]


# ------------------------------------------------------------------------------ started


async def test_new_starts_an_export_watches_it_and_posts_it_once_finished(
    fake_asana: FakeAsana, fake_slack: FakeSlack, sbot: Scenario
) -> None:
    answer = await sbot.command("new", user_id=ADMIN)
    (post,) = creates(fake_asana)
    assert post.body == {"data": {"organization": ORG}}
    assert post.query["opt_fields"] == OPT_FIELDS, "the same opt_fields as lookups"
    (gid,) = fake_asana.export_gids()
    assert answer["response_type"] == "ephemeral"
    assert f"started export `{gid}`" in answer["text"] and "Watching" in answer["text"]
    (card,) = posts(fake_slack, "C0001")
    assert "pending" in text_of(card) and "Acme" in text_of(card)

    fake_asana.set_state(gid, "finished")
    await sbot.run_until(lambda: finished_posts(fake_slack, "C0001"))
    await sbot.ticks(3)
    (done,) = finished_posts(fake_slack, "C0001")
    assert f"<@{ADMIN}>" in done["text"]
    assert fake_asana.download_urls(gid)[-1] in json.dumps(done["blocks"])
    assert len(creates(fake_asana)) == 1
    assert sbot.tracebacks == []


async def test_new_names_its_organization(
    fake_asana: FakeAsana, fake_slack: FakeSlack, sbot: Scenario
) -> None:
    answer = await sbot.command("new 0077", user_id=ADMIN)
    assert "started export" in answer["text"]
    assert creates(fake_asana)[0].body == {"data": {"organization": "77"}}


async def test_without_an_organization_new_asks_for_one(
    fake_asana: FakeAsana, start_scenario: StartScenario
) -> None:
    bot = await start_scenario(ADMIN_USERS=ADMIN)
    answer = await bot.command("new", user_id=ADMIN)
    assert "Which organization?" in answer["text"] and "ASANA_ORGANIZATION_GID" in answer["text"]
    assert creates(fake_asana) == []


# ------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("status", "retry_after", "words"),
    [
        (400, None, "rejected the request to export organization"),
        (401, None, "did not accept the bot's token"),
        (402, None, "not on a plan with organization exports"),
        (403, None, "not a Service Account token, or not an admin of that organization"),
        (404, None, f"Asana knows no organization `{ORG}`"),
        (429, 40.0, "Try again in 40 s"),
    ],
)
async def test_asanas_refusals_are_explained_and_start_nothing(
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    sbot: Scenario,
    status: int,
    retry_after: float | None,
    words: str,
) -> None:
    fake_asana.fail(status, method="POST", retry_after=retry_after, times=5)
    answer = await sbot.command("new", user_id=ADMIN)
    assert words in answer["text"], answer["text"]
    assert "No export was started" in answer["text"]
    assert len(creates(fake_asana)) == 1, "a refusal is not retried (429: past the budget)"
    assert posts(fake_slack, "C0001") == []
    assert sbot.tracebacks == []


@pytest.mark.parametrize("fault", ["timeout", "server_error"])
async def test_a_post_that_may_have_reached_asana_is_never_repeated(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario, fault: str
) -> None:
    fake_asana.set_organization(ORG, "Acme")
    bot = await start_scenario(**NEW, ASANA_TIMEOUT_SECONDS="0.5")
    if fault == "timeout":
        fake_asana.set_delay(1.5)  # Asana creates it, but answers after the bot gave up
    else:
        fake_asana.fail(502, method="POST", times=5)
    answer = await bot.command("new", user_id=ADMIN)
    assert "do not know whether an export was started" in answer["text"], answer["text"]
    await bot.settle()
    assert len(creates(fake_asana)) == 1, "a POST that may have reached Asana is not repeated"
    assert posts(fake_slack, "C0001") == []


# ------------------------------------------------------------------------------ duplicates


async def test_a_running_export_is_offered_and_force_starts_another(
    fake_asana: FakeAsana, fake_slack: FakeSlack, sbot: Scenario
) -> None:
    await sbot.command("new", user_id=ADMIN, channel="C0001")
    (gid,) = fake_asana.export_gids()

    offer = await sbot.command("new", user_id=ADMIN, channel="C0002")
    assert len(creates(fake_asana)) == 1, "offered, not created"
    assert "still running. Watch it instead?" in offer["text"] and gid in offer["text"]
    (button,) = [e for b in offer["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert button["value"] == gid

    clicked = await sbot.click(
        action_id=button["action_id"], value=button["value"], channel_id="C0002", user_id=ADMIN
    )
    assert clicked.status == 200
    await sbot.settle()
    (answer,) = [r for r in fake_slack.responses() if "Watching" in json.dumps(r.body)]
    assert answer.body.get("replace_original") is False
    assert len(posts(fake_slack, "C0002")) == 1, "the card, in the channel that clicked"
    assert len(creates(fake_asana)) == 1

    forced = await sbot.command("new --force", user_id=ADMIN, channel="C0003")
    assert "started export" in forced["text"]
    assert len(creates(fake_asana)) == 2

    for export in fake_asana.export_gids():
        fake_asana.set_state(export, "finished")
    await sbot.run_until(lambda: len(finished_posts(fake_slack)) == 3)
    again = await sbot.command("new", user_id=ADMIN)
    assert "started export" in again["text"], "nothing runs any more: no offer"
    assert len(creates(fake_asana)) == 3


# ------------------------------------------------------------------------------ replays


async def test_a_slack_retry_and_a_replayed_request_start_one_export(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario, tmp_path: Path
) -> None:
    """The retry arrives at another replica while the first is still waiting for Asana."""
    fake_asana.set_organization(ORG, "Acme")
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = await start_scenario(url, **NEW), await start_scenario(url, **NEW)
    fake_asana.set_delay(0.5)
    body = form_body(
        slash_command_form(text="new", user_id=ADMIN, response_url=fake_slack.new_response_url())
    )
    original = signed_headers(body, secret=SIGNING_SECRET)
    retry = {
        **signed_headers(body, secret=SIGNING_SECRET),
        "X-Slack-Retry-Num": "1",
        "X-Slack-Retry-Reason": "http_timeout",
    }
    answers = await asyncio.gather(first.dispatch(body, original), second.dispatch(body, retry))
    replayed = await first.dispatch(body, original)  # byte-identical, within Slack's 5 minutes
    await first.settle()
    assert [a.status for a in (*answers, replayed)] == [200, 200, 200]
    assert len(creates(fake_asana)) == 1, [a.body_text for a in answers]
    texts = [json.loads(a.body_text)["text"] for a in (*answers, replayed)]
    assert sum("Asana started export" in t for t in texts) == 1, texts
    assert sum("delivered this command again" in t for t in texts) == 2, texts
    assert len(posts(fake_slack, "C0001")) == 1, "one card"
    assert first.tracebacks == [] and second.tracebacks == []


# ------------------------------------------------------------------------------ who may


async def test_only_admin_users_may_start_exports(
    fake_asana: FakeAsana, fake_slack: FakeSlack, sbot: Scenario
) -> None:
    fake_slack.set_user("U0OWNER", is_owner=True)  # a workspace owner, but not listed
    for user in ("U0OTHER", "U0OWNER"):
        answer = await sbot.command("new", user_id=user)
        assert "for admins only" in answer["text"] and f"<@{ADMIN}>" in answer["text"]
    assert creates(fake_asana) == [] and fake_slack.calls_to("users.info") == []
    # Lookups and watches keep their rules: anyone allowed may still look up.
    fake_asana.set_export("1200000000000555", "started")
    looked = await sbot.command("1200000000000555", user_id="U0OTHER")
    assert "Watching" in looked["text"]


async def test_without_admin_users_workspace_admins_and_owners_may(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    fake_asana.set_organization(ORG, "Acme")
    bot = await start_scenario(LINK_POLICY="anywhere", ASANA_ORGANIZATION_GID=ORG)
    fake_slack.set_user("U0BOSS", is_admin=True)
    fake_slack.set_user("U0OWNER", is_primary_owner=True)
    refused = await bot.command("new", user_id="U0MEMBER")
    assert "for admins only" in refused["text"]
    assert "the workspace's admins and owners" in refused["text"]
    assert "started export" in (await bot.command("new", user_id="U0BOSS"))["text"]
    assert "started export" in (await bot.command("new --force", user_id="U0OWNER"))["text"]
    assert len(creates(fake_asana)) == 2
    asked = [c.body.get("user") for c in fake_slack.calls_to("users.info")]
    assert sorted(asked) == ["U0BOSS", "U0MEMBER", "U0OWNER"]
    await bot.command("new", user_id="U0MEMBER")
    assert len(fake_slack.calls_to("users.info")) == 3, "a no is kept briefly"
    await bot.command("new --force", user_id="U0BOSS")
    assert len(fake_slack.calls_to("users.info")) == 4, "a yes is asked afresh"

    fake_slack.fail("users.info", "internal_error", times=None)
    unknown = await bot.command("new", user_id="U0OTHERBOSS")
    assert "could not check with Slack" in unknown["text"]
    assert len(creates(fake_asana)) == 3
    assert bot.tracebacks == []


# ------------------------------------------------------------------------------ real process


def test_new_in_the_real_process_card_then_finished_post(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot_env: dict[str, str], tmp_path: Path
) -> None:
    fake_asana.set_organization(ORG, "Acme")
    bot = BotProcess(tmp_path, {**bot_env, **FAST_WATCH, **NEW}).start()
    try:
        answer = command(bot, fake_slack, "new", user_id=ADMIN)
        assert "started export" in answer["text"], answer
        (gid,) = fake_asana.export_gids()
        wait_until(lambda: posts(fake_slack, "C0001"), 10, "the status card")
        fake_asana.set_state(gid, "finished")
        wait_until(lambda: finished_posts(fake_slack, "C0001"), 30, "the finished post")
        assert len(creates(fake_asana)) == 1
        assert ASANA_TOKEN_CANARY not in bot.logs()
    finally:
        bot.stop()


ASANA_TOKEN_CANARY = "asana-canary-token-6f1d2c"
