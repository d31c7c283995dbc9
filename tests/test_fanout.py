"""One export's news told to many channels: at most FANOUT_CONCURRENCY posts at once, each
channel exactly once, the first post alone (a dead token pauses posting before the rest), and
one channel's failure neither stops nor duplicates the others. In process, over real HTTP
against the fake Slack, which holds each accepted chat.postMessage answer for a while so that
the posts in flight can be counted from the fake's own record.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from contextlib import closing
from pathlib import Path

from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.notify import FANOUT_CONCURRENCY
from bot.testing import finished_posts
from bot.testing.scenario import Scenario
from bot.testing.wait import async_wait_until
from tests.conftest import StartScenario

GID = "1200000000000900"
#: The first alone, then two full waves and a part: the bound shows, and so does the order.
CHANNELS = [f"CFAN{i:04d}" for i in range(1 + 2 * FANOUT_CONCURRENCY + 3)]
#: How long the fake holds each accepted post's answer: the post is in flight meanwhile.
HOLD = 0.4
SETTINGS = {"LINK_POLICY": "anywhere", "MAX_WATCHES_PER_USER": "1000"}


async def _watched_by_all(bot: Scenario, asana: FakeAsana) -> None:
    asana.set_export(GID, "started")
    export = await bot.runtime.asana.get_export(GID)
    now = bot.runtime.now()
    for i, channel in enumerate(CHANNELS):
        await bot.runtime.store.subscribe(
            team_id="T0001",
            channel_id=channel,
            user_id=f"U{i:04d}",
            export=export,
            now=now,
            next_poll_at=now,
        )


def _in_flight_most(slack: FakeSlack) -> int:
    """The most held posts whose holds overlapped: posts the bot had in flight at once."""
    spans = [(h.call.at, h.call.at + HOLD) for h in slack.held_calls("chat.postMessage")]
    return max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)


async def _told_bounded_and_once_each(bot: Scenario, asana: FakeAsana, slack: FakeSlack) -> None:
    await _watched_by_all(bot, asana)
    slack.set_delay_after_store("chat.postMessage", HOLD)
    asana.set_state(GID, "finished")
    await bot.run_until(
        lambda: len(finished_posts(slack)) >= len(CHANNELS), timeout=60, what="all posts"
    )
    await bot.ticks(3)
    assert sorted(p["channel"] for p in finished_posts(slack)) == sorted(CHANNELS)
    held = sorted(h.call.at for h in slack.held_calls("chat.postMessage"))
    assert held[1] - held[0] >= HOLD * 0.9, "the first post is answered before any other goes"
    most = _in_flight_most(slack)
    assert 1 < most <= FANOUT_CONCURRENCY, most


async def test_posts_go_out_bounded_and_once_each(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    bot = await start_scenario(**SETTINGS)
    await _told_bounded_and_once_each(bot, fake_asana, fake_slack)


async def test_posts_go_out_bounded_and_once_each_on_postgresql(
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    start_scenario: StartScenario,
    fresh_postgres_url: str,
) -> None:
    bot = await start_scenario(database_url=fresh_postgres_url, **SETTINGS)
    await _told_bounded_and_once_each(bot, fake_asana, fake_slack)


async def test_a_dead_token_on_the_first_post_stops_the_rest(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario, tmp_path: Path
) -> None:
    bot = await start_scenario(**SETTINGS)
    await _watched_by_all(bot, fake_asana)
    fake_slack.fail("chat.postMessage", "token_revoked", times=None)
    fake_asana.set_state(GID, "finished")
    await bot.run_until(
        lambda: fake_slack.calls_to("chat.postMessage"), timeout=30, what="the first post"
    )
    await bot.ticks(3, recover=False)
    assert len(fake_slack.calls_to("chat.postMessage")) == 1, "one refusal, then the pause"
    assert bot.runtime.notify.paused()
    with closing(sqlite3.connect(tmp_path / "bot.db")) as conn:
        told = conn.execute(
            "SELECT COUNT(*) FROM subscriptions WHERE notified_at IS NOT NULL"
        ).fetchone()
    assert told == (0,), "no claim is left behind: recovery tells them after the pause"


async def test_one_lost_channel_ends_its_watch_and_the_rest_are_told(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario, tmp_path: Path
) -> None:
    bot = await start_scenario(**SETTINGS)
    await _watched_by_all(bot, fake_asana)
    lost = CHANNELS[5]
    fake_slack.add_channel(lost, is_archived=True)
    fake_asana.set_state(GID, "finished")
    others = [c for c in CHANNELS if c != lost]
    await bot.run_until(
        lambda: all(finished_posts(fake_slack, c) for c in others), timeout=60, what="posts"
    )
    await bot.ticks(3)
    assert [len(finished_posts(fake_slack, c)) for c in others] == [1] * len(others)
    assert finished_posts(fake_slack, lost) == []
    with closing(sqlite3.connect(tmp_path / "bot.db")) as conn:
        rows = dict(conn.execute("SELECT channel_id, end_reason FROM subscriptions").fetchall())
    assert "is_archived" in (rows[lost] or ""), rows[lost]
    assert all(rows[c] for c in others), "every told watch ended"


async def test_posting_concurrency_is_not_the_token_pause_times_n(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    """Token refusals that were already in flight when the pause began extend it once only."""
    bot = await start_scenario(**SETTINGS)
    await _watched_by_all(bot, fake_asana)
    # The first post succeeds (no pause yet); every later one is refused as a dead token.
    fake_slack.set_delay_after_store("chat.postMessage", math.inf)
    fake_asana.set_state(GID, "finished")
    tick = asyncio.create_task(bot.tick())  # the poll that finds it finished, and the fan-out
    await async_wait_until(lambda: fake_slack.held_calls("chat.postMessage"), timeout=30)
    fake_slack.fail("chat.postMessage", "token_revoked", times=None)
    fake_slack.set_delay_after_store("chat.postMessage", 0)
    fake_slack.release_held()
    await asyncio.wait_for(tick, 30)
    refused = [c for c in fake_slack.calls_to("chat.postMessage") if not c.ok]
    assert len(refused) == FANOUT_CONCURRENCY, "one wave was in flight, then the pause"
    status = bot.runtime.notify.status()
    assert status.paused and status.until is not None
    pause = (status.until - bot.runtime.now()).total_seconds()
    assert pause <= 60, f"one pause of 60 s, not one per refusal ({pause:.0f} s)"
