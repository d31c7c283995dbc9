"""Exactly-once notification across crashes: the watcher against a real SQLite store, real
HTTP to the fake Asana and fake Slack, and an injected clock (no sleeping on grace periods)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import LinkPolicy
from bot.asana import AsanaClient
from bot.db import create_engine, upgrade
from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.models import Export, ExportState
from bot.ratelimit import TokenBucket
from bot.slack_out import LinkGate
from bot.store import Store
from bot.watcher import Watcher, WatcherConfig
from tests.conftest import ASANA_TOKEN

GID = "1200000000000999"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    engine = create_engine(f"sqlite:///{tmp_path / 'bot.db'}")
    await upgrade(engine)
    yield Store(engine)
    await engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_watcher(store: Store, asana: FakeAsana, slack: FakeSlack, clock: Clock, owner: str):
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    return Watcher(
        store=store,
        asana=AsanaClient(ASANA_TOKEN, asana.base_url, max_retry_time=1),
        slack=client,
        links=LinkGate(client, LinkPolicy.ANYWHERE),
        budget=TokenBucket(10_000, clock=time.monotonic),
        owner=owner,
        config=WatcherConfig(notify_grace=timedelta(seconds=60)),
        now=clock,
        rng=random.Random(0),
    )


def finished_posts(slack: FakeSlack) -> list[dict]:
    return [
        c.body
        for c in slack.calls_to("chat.postMessage")
        if c.ok and (c.body.get("metadata") or {}).get("event_type") == "asana_export_finished"
    ]


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
    await store.upsert_export(
        Export(gid=GID, state=ExportState.FINISHED), now=clock(), next_poll_at=None
    )
    return ids


async def test_crash_after_post_before_commit_is_recorded_from_history(
    store: Store, fake_asana: FakeAsana, fake_slack: FakeSlack, clock: Clock
) -> None:
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
    watcher = make_watcher(store, fake_asana, fake_slack, clock, "replica-b")
    await watcher.recover()
    assert (await store.get_subscription(sub_id)).notified_ts is None, "within grace: wait"
    clock.advance(61)
    await watcher.recover()
    sub = await store.get_subscription(sub_id)
    assert sub.notified_ts is not None and sub.end_reason == "finished"
    assert finished_posts(fake_slack) == [], "found in history, so not posted again"
    history = fake_slack.calls_to("conversations.history")
    assert history and history[-1].body.get("include_all_metadata") in (True, "true", "1")


async def test_crash_before_post_is_posted_once_with_a_fresh_link(
    store: Store, fake_asana: FakeAsana, fake_slack: FakeSlack, clock: Clock
) -> None:
    fake_asana.set_export(GID, "finished", organization_name="Acme")
    (sub_id,) = await watched_finished_export(store, clock, ["C1"])
    assert await store.try_mark_notified(sub_id, now=clock())  # claimed, then the crash
    watcher = make_watcher(store, fake_asana, fake_slack, clock, "replica-b")
    clock.advance(61)
    await watcher.recover()
    (post,) = finished_posts(fake_slack)
    assert fake_asana.download_urls(GID)[-1] in str(post["blocks"])
    await watcher.recover()
    assert len(finished_posts(fake_slack)) == 1


async def test_finished_but_never_told_is_told_by_recovery(
    store: Store, fake_asana: FakeAsana, fake_slack: FakeSlack, clock: Clock
) -> None:
    fake_asana.set_export(GID, "finished")
    await watched_finished_export(store, clock, ["C1", "C2"])
    watcher = make_watcher(store, fake_asana, fake_slack, clock, "replica-a")
    await watcher.recover()
    await watcher.recover()
    assert sorted(p["channel"] for p in finished_posts(fake_slack)) == ["C1", "C2"]
    gets = [r for r in fake_asana.requests_for(GID) if r.method == "GET"]
    assert len(gets) == 1, "one fresh fetch serves every channel"


async def test_racing_replicas_post_once_per_subscription(
    store: Store, fake_asana: FakeAsana, fake_slack: FakeSlack, clock: Clock
) -> None:
    fake_asana.set_export(GID, "finished")
    await watched_finished_export(store, clock, ["C1", "C2", "C3"])
    replicas = [make_watcher(store, fake_asana, fake_slack, clock, f"r{i}") for i in range(4)]
    await asyncio.gather(*(w.recover() for w in replicas))
    assert sorted(p["channel"] for p in finished_posts(fake_slack)) == ["C1", "C2", "C3"]


async def test_permanent_channel_error_ends_the_watch_without_retrying(
    store: Store, fake_asana: FakeAsana, fake_slack: FakeSlack, clock: Clock
) -> None:
    fake_asana.set_export(GID, "finished")
    fake_slack.add_channel("CARCH", is_archived=True)
    (sub_id,) = await watched_finished_export(store, clock, ["CARCH"])
    watcher = make_watcher(store, fake_asana, fake_slack, clock, "replica-a")
    await watcher.recover()
    sub = await store.get_subscription(sub_id)
    assert sub.ended_at is not None and sub.end_reason == "slack_is_archived"
    calls = len(fake_slack.calls_to("chat.postMessage"))
    await watcher.recover()
    assert len(fake_slack.calls_to("chat.postMessage")) == calls, "not retried"
