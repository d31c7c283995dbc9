"""Exactly-once notification across crashes: the bot's recovery pass in process, against a real
SQLite store, real HTTP to the fake Asana and fake Slack, and an injected clock (no sleeping on
grace periods). Each "replica" is a bot built by the scenario harness on the same database."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.models import Export, ExportState
from bot.store import PollResult, Store, subscriptions
from bot.store import _subscription as subscription_of
from bot.testing import finished_posts
from bot.testing.scenario import Clock, Scenario
from tests.conftest import StartScenario

GID = "1200000000000999"


async def replica(start_scenario: StartScenario) -> Scenario:
    """One more replica on the test's database; unrecorded posts are checked after 60 s."""
    return await start_scenario(LINK_POLICY="anywhere", NOTIFY_GRACE_SECONDS="60")


async def get_subscription(store: Store, sub_id: int):
    async with store.engine.connect() as conn:
        query = subscriptions.select().where(subscriptions.c.id == sub_id)
        row = (await conn.execute(query)).first()
    return subscription_of(row._mapping) if row else None


async def watched_finished_export(store: Store, clock: Clock, channels: list[str]) -> list[int]:
    export = Export(gid=GID, state=ExportState.STARTED, organization_name="Acme")
    ids = []
    for channel in channels:
        sub, _ = await store.subscribe(
            team_id="T0001",
            channel_id=channel,
            user_id="U0001",
            export=export,
            now=clock(),
            next_poll_at=clock(),
        )
        ids.append(sub.id)
    # The poll that saw it finish (the crash came after it was recorded).
    assert await store.claim_due(owner="poller", now=clock(), lease=timedelta(minutes=1), limit=1)
    finished = Export(gid=GID, state=ExportState.FINISHED, organization_name="Acme")
    result = PollResult(next_poll_at=None, export=finished)
    assert await store.record_poll(GID, owner="poller", now=clock(), result=result)
    return ids


async def test_crash_after_post_before_commit_is_recorded_from_history(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    bot = await replica(start_scenario)
    store, clock = bot.runtime.store, bot.clock
    (sub_id,) = await watched_finished_export(store, clock, ["C1"])
    # The crashed replica had won the claim and Slack had accepted its post:
    assert await store.try_mark_notified(sub_id, now=clock())
    fake_slack.add_message(
        "C1",
        "ready",
        bot=True,
        metadata={
            "event_type": "asana_export_finished",
            "event_payload": {"gid": GID, "subscription_id": sub_id},
        },
    )
    await bot.recover()
    assert (await get_subscription(store, sub_id)).notified_ts is None, "within grace: wait"
    await bot.recover(after=61)
    sub = await get_subscription(store, sub_id)
    assert sub.notified_ts is not None and sub.end_reason == "finished"
    assert finished_posts(fake_slack) == [], "found in history, so not posted again"
    history = fake_slack.calls_to("conversations.history")
    assert history and history[-1].body.get("include_all_metadata") in (True, "true", "1")


async def test_crash_before_post_is_posted_once_with_a_fresh_link(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    bot = await replica(start_scenario)
    store, clock = bot.runtime.store, bot.clock
    fake_asana.set_export(GID, "finished", organization_name="Acme")
    (sub_id,) = await watched_finished_export(store, clock, ["C1"])
    assert await store.try_mark_notified(sub_id, now=clock())  # claimed, then the crash
    await bot.recover(after=61)
    (post,) = finished_posts(fake_slack)
    assert fake_asana.download_urls(GID)[-1] in str(post["blocks"])
    await bot.recover()
    assert len(finished_posts(fake_slack)) == 1


async def test_finished_but_never_told_is_told_by_recovery(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    bot = await replica(start_scenario)
    fake_asana.set_export(GID, "finished")
    await watched_finished_export(bot.runtime.store, bot.clock, ["C1", "C2"])
    await bot.recover()
    await bot.recover()
    assert sorted(p["channel"] for p in finished_posts(fake_slack)) == ["C1", "C2"]
    gets = [r for r in fake_asana.requests_for(GID) if r.method == "GET"]
    assert len(gets) == 1, "one fresh fetch serves every channel"


async def test_racing_replicas_post_once_per_subscription(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    replicas = [await replica(start_scenario) for _ in range(4)]
    fake_asana.set_export(GID, "finished")
    await watched_finished_export(replicas[0].runtime.store, replicas[0].clock, ["C1", "C2", "C3"])
    await asyncio.gather(*(r.recover() for r in replicas))
    assert sorted(p["channel"] for p in finished_posts(fake_slack)) == ["C1", "C2", "C3"]


async def test_permanent_channel_error_ends_the_watch_without_retrying(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    bot = await replica(start_scenario)
    store = bot.runtime.store
    fake_asana.set_export(GID, "finished")
    fake_slack.add_channel("CARCH", is_archived=True)
    (sub_id,) = await watched_finished_export(store, bot.clock, ["CARCH"])
    await bot.recover()
    sub = await get_subscription(store, sub_id)
    assert sub.ended_at is not None and sub.end_reason == "slack_is_archived"
    calls = len(fake_slack.calls_to("chat.postMessage"))
    await bot.recover()
    assert len(fake_slack.calls_to("chat.postMessage")) == calls, "not retried"


async def test_racing_replicas_post_once_per_subscription_postgres(
    fresh_postgres_url: str,  # first: dropped after the replicas have closed their pools
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    start_scenario: StartScenario,
) -> None:
    """The same race on PostgreSQL, where the replicas' transactions really overlap."""
    replicas = [
        await start_scenario(
            database_url=fresh_postgres_url, LINK_POLICY="anywhere", NOTIFY_GRACE_SECONDS="60"
        )
        for _ in range(4)
    ]
    fake_asana.set_export(GID, "finished")
    await watched_finished_export(replicas[0].runtime.store, replicas[0].clock, ["C1", "C2", "C3"])
    await asyncio.gather(*(r.recover() for r in replicas))
    assert sorted(p["channel"] for p in finished_posts(fake_slack)) == ["C1", "C2", "C3"]
