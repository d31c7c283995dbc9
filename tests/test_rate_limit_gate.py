"""One 429 gate per token: the bot as `bot.app` wires it, over real HTTP to the fake Asana.

Asana's Retry-After holds every request on the token. A lookup's 429 must defer polls, and a
poll's 429 must hold lookups, through the one `RateLimitGate` that the client and the polling
budget share (nothing in the watcher bridges them by hand).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from bot.app import build_runtime, build_watcher
from bot.asana import AsanaRateLimited
from bot.config import load_settings
from bot.db import open_database
from bot.demo.fake_asana import FakeAsana
from bot.models import Export, ExportState
from bot.runtime import Runtime
from bot.store import Store

WATCHED = "1200000000000111"
LOOKED_UP = "1200000000000222"
#: Longer than both the poll's and the lookup's retry budget: the 429 is not waited out in-call.
RETRY_AFTER = 30


@pytest.fixture
async def runtime(bot_env: dict[str, str], fake_asana: FakeAsana) -> AsyncIterator[Runtime]:
    settings = load_settings("run", **bot_env)
    engine = await open_database(settings.DATABASE_URL)
    runtime = build_runtime(settings, Store(engine))
    fake_asana.set_export(WATCHED, "started")
    fake_asana.set_export(LOOKED_UP, "started")
    now = datetime.now(UTC)
    await runtime.store.subscribe(
        team_id="T0001",
        channel_id="C0001",
        user_id="U0001",
        export=Export(gid=WATCHED, state=ExportState.STARTED),
        now=now,
        next_poll_at=now,
    )
    try:
        yield runtime
    finally:
        await runtime.asana.aclose()
        await runtime.slack.session.close()
        runtime.store.close()
        await engine.dispose()


def gets(fake: FakeAsana, gid: str) -> list[int | None]:
    return [r.status for r in fake.requests if r.gid == gid]


async def test_a_lookups_429_defers_polls(runtime: Runtime, fake_asana: FakeAsana) -> None:
    assert runtime.budget.gate is runtime.asana.gate, "one gate, shared"
    fake_asana.fail(429, gid=LOOKED_UP, retry_after=RETRY_AFTER)
    with pytest.raises(AsanaRateLimited):
        await runtime.asana.get_export(LOOKED_UP)
    watcher = build_watcher(runtime)
    assert await watcher.tick() == 0
    assert gets(fake_asana, WATCHED) == [], "a poll used the token inside its Retry-After"
    assert RETRY_AFTER - 5 < runtime.budget.seconds_until_available() <= RETRY_AFTER + 1


async def test_a_polls_429_holds_lookups(runtime: Runtime, fake_asana: FakeAsana) -> None:
    assert runtime.budget.gate is runtime.asana.gate, "one gate, shared"
    fake_asana.fail(429, gid=WATCHED, retry_after=RETRY_AFTER)
    watcher = build_watcher(runtime)
    assert await watcher.tick() == 1
    assert gets(fake_asana, WATCHED) == [429]
    with pytest.raises(AsanaRateLimited) as held:
        await runtime.asana.get_export(LOOKED_UP)
    assert not held.value.request_sent, "refused at the gate, not by Asana"
    assert held.value.retry_after is not None and held.value.retry_after > RETRY_AFTER - 5
    assert gets(fake_asana, LOOKED_UP) == []
