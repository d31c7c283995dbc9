"""Fair use: nobody can starve polling (issue 8).

One flooding user cannot push another channel's polls back; a person past
USER_REQUESTS_PER_MINUTE, a new watch past MAX_WATCHES_PER_USER / MAX_WATCHES_PER_CHANNEL, and a
"Get a fresh link" click when people's share of the budget is used up each get a clear
ephemeral answer within Slack's 3 s, and no Asana call is made for them.

The flood goes over real HTTP to the real process, polled by its own scheduler; the limits and
caps are scenarios in process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.demo.signing import form_body, signed_headers, slash_command_form
from bot.testing import (
    FAST_WATCH,
    SIGNING_SECRET,
    BotProcess,
    async_wait_until,
    command,
    text_of,
)
from tests.conftest import StartScenario

WATCHED = "1200000000000801"
FINISHED = "1200000000000802"
#: POLL_MAX_SECONDS in FAST_WATCH: the watched export's poll interval once it is settled.
INTERVAL = float(FAST_WATCH["POLL_MAX_SECONDS"])
TRY_AGAIN = re.compile(r"try again in (\d+) seconds?")


def _start(tmp_path: Path, env: dict[str, str], **extra: str) -> BotProcess:
    return BotProcess(tmp_path, {**env, **FAST_WATCH, "LINK_POLICY": "anywhere", **extra}).start()


def _gets(fake_asana: FakeAsana, gid: str) -> list[float]:
    return [r.at for r in fake_asana.requests_for(gid) if r.method == "GET"]


async def _flood(
    url: str,
    slack: FakeSlack,
    *,
    n: int,
    over: float,
    text: str,
    user_id: str,
    channel_id: str,
) -> list[tuple[int, float, str]]:
    """`n` signed slash commands spread evenly over `over` seconds (up to 20 in flight):
    (status, seconds to the ack, body) each."""
    bodies = [
        form_body(
            slash_command_form(
                text=text,
                user_id=user_id,
                channel_id=channel_id,
                response_url=slack.new_response_url(),
            )
        )
        for _ in range(n)
    ]
    results: list[tuple[int, float, str]] = []
    pending = iter(enumerate(bodies))
    start = time.monotonic()
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:

        async def worker() -> None:
            for i, body in pending:
                await asyncio.sleep(max(0.0, start + over * i / n - time.monotonic()))
                headers = signed_headers(body, secret=SIGNING_SECRET)
                started = time.monotonic()
                resp = await client.post(url, content=body, headers=headers)
                results.append((resp.status_code, time.monotonic() - started, resp.text))

        await asyncio.gather(*(worker() for _ in range(20)))
    return results


def test_one_flooding_user_does_not_delay_another_channels_polls(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot_env: dict[str, str], tmp_path: Path
) -> None:
    bot = _start(tmp_path, bot_env, POLL_BUDGET_PER_MINUTE="100")
    try:
        fake_asana.set_export(WATCHED, "started", organization_name="Patient Org")
        fake_asana.set_export(FINISHED, "finished", organization_name="Flooded Org")
        assert "Watching" in command(bot, fake_slack, WATCHED, channel="COTHER")["text"]
        fake_slack.wait_for(lambda: len(_gets(fake_asana, WATCHED)) >= 3, timeout=10)

        flood_started = time.monotonic()
        answers = asyncio.run(
            _flood(
                bot.events_url,
                fake_slack,
                n=500,
                over=9.0,
                text=FINISHED,
                user_id="U0FLOOD",
                channel_id="CFLOOD",
            )
        )
        flood_seconds = time.monotonic() - flood_started
        time.sleep(6.0)  # watch the polls a little past the flood, too
        observed_until = time.monotonic()

        assert flood_seconds <= 10.0, f"the flood took {flood_seconds:.1f} s, not under 10 s"
        polls = [t for t in _gets(fake_asana, WATCHED) if t >= flood_started - INTERVAL - 1]
        gaps = [b - a for a, b in itertools.pairwise([*polls, observed_until])]
        print(f"flood of 500 in {flood_seconds:.1f} s; largest poll gap {max(gaps):.2f} s")
        assert max(gaps) <= INTERVAL + 5.0, gaps
        assert len(answers) == 500
        assert all(status == 200 for status, _, _ in answers)
        slowest = max(elapsed for _, elapsed, _ in answers)
        assert slowest < 3.0, f"an answer took {slowest:.2f} s"
        bodies = [json.loads(text) for _, _, text in answers]
        assert all(b.get("text") and b.get("blocks") for b in bodies), "well-formed answers"
        slowed = [b for b in bodies if TRY_AGAIN.search(b["text"])]
        assert all(b["response_type"] == "ephemeral" for b in slowed)
        assert all(b["response_type"] == "in_channel" for b in bodies if b not in slowed)
        assert len(slowed) >= 450, "past the per-user limit the flood is told to wait"
        assert len(_gets(fake_asana, FINISHED)) <= 20, "and makes no Asana call"
        print(f"slowest ack {slowest:.2f} s, {len(slowed)} of 500 told to wait")

        assert "Traceback" not in bot.logs()
    finally:
        bot.stop()


async def test_per_user_limit_answers_politely_and_spares_others(
    fake_asana: FakeAsana, start_scenario: StartScenario
) -> None:
    bot = await start_scenario(LINK_POLICY="anywhere", USER_REQUESTS_PER_MINUTE="3")
    fake_asana.set_export(FINISHED, "finished", organization_name="Limited Org")
    for _ in range(3):
        assert "Limited Org" in text_of(await bot.command(FINISHED, user_id="U0ALICE"))
    fourth = await bot.command(FINISHED, user_id="U0ALICE")
    assert fourth["response_type"] == "ephemeral"
    found = TRY_AGAIN.search(fourth["text"])
    assert found and 1 <= int(found.group(1)) <= 60, fourth["text"]
    assert "3 requests in the last minute" in fourth["text"]
    assert len(_gets(fake_asana, FINISHED)) == 3, "no Asana call past the limit"
    assert "Limited Org" in text_of(await bot.command(FINISHED, user_id="U0BOB"))


async def test_watch_caps_per_user_and_per_channel(
    fake_asana: FakeAsana, start_scenario: StartScenario
) -> None:
    caps = {"MAX_WATCHES_PER_USER": "2", "MAX_WATCHES_PER_CHANNEL": "3"}
    bot = await start_scenario(LINK_POLICY="anywhere", POLL_BUDGET_PER_MINUTE="1000", **caps)
    gids = [f"12000000000009{i:02d}" for i in range(6)]
    for gid in gids:
        fake_asana.set_export(gid, "started", organization_name="Capped Org")

    async def watch(gid: str, channel: str, user: str) -> dict[str, Any]:
        answer = await bot.command(f"watch {gid}", channel=channel, user_id=user)
        assert answer["response_type"] == "ephemeral"
        return answer

    assert "Watching" in (await watch(gids[0], "C1", "U0ANN"))["text"]
    assert "Watching" in (await watch(gids[1], "C2", "U0ANN"))["text"]
    refused = (await watch(gids[2], "C1", "U0ANN"))["text"]
    assert "You already watch 2 exports" in refused
    assert "unwatch" in refused and "list" in refused
    assert "already watches" in (await watch(gids[0], "C1", "U0ANN"))["text"], "asking again"

    assert "Watching" in (await watch(gids[2], "C1", "U0BEN"))["text"]
    assert "Watching" in (await watch(gids[3], "C1", "U0CAT"))["text"]
    refused = (await watch(gids[4], "C1", "U0DAN"))["text"]
    assert "This channel already watches 3 exports" in refused and "unwatch" in refused

    await bot.command(f"unwatch {gids[0]}", channel="C1")
    assert "Watching" in (await watch(gids[4], "C1", "U0DAN"))["text"], "unwatch frees room"
    assert "Watching" in (await watch(gids[5], "C3", "U0ANN"))["text"], "for its person too"
    listed = text_of(await bot.command("list", channel="C1"))
    assert gids[0] not in listed and all(g in listed for g in gids[2:5])


@pytest.mark.parametrize("clicker", ["U0BOB"])
async def test_fresh_link_click_when_peoples_share_is_used_up_is_told_to_wait(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario, clicker: str
) -> None:
    # 6 a minute, half reserved for polling: people get 3 a minute, one at a time.
    bot = await start_scenario(
        LINK_POLICY="anywhere", POLL_BUDGET_PER_MINUTE="6", POLL_RESERVED_SHARE="0.5"
    )
    fake_asana.set_export(FINISHED, "finished", organization_name="Busy Org")
    assert "Busy Org" in text_of(await bot.command(FINISHED, user_id="U0ALICE"))
    response_url = fake_slack.new_response_url()
    clicked = await bot.click(
        action_id="fresh_link", value=FINISHED, response_url=response_url, user_id=clicker
    )
    assert clicked.status == 200 and clicked.elapsed < 3.0
    await async_wait_until(lambda: fake_slack.responses(response_url), timeout=3)
    (reply,) = fake_slack.responses(response_url)
    assert reply.body["response_type"] == "ephemeral"
    assert "Asana is busy right now" in reply.body["text"]
    found = TRY_AGAIN.search(reply.body["text"])
    assert found and 1 <= int(found.group(1)) <= 20, reply.body["text"]
    assert len(_gets(fake_asana, FINISHED)) == 1, "the click made no Asana call"
