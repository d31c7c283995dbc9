"""The store's SQLite threads (bot.sqlite_thread): whole transactions, one at a time per thread.

The store's own tests (tests/test_store.py) run every query through this path on SQLite; these
check what is particular to it: commit and rollback around the work, writers that never wait
on each other, and a transaction dropped from the queue when its caller is cancelled.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot.db import open_database, thread_engine
from bot.sqlite_thread import ThreadedSqlite

_TABLE = sa.Table("scratch", sa.MetaData(), sa.Column("n", sa.Integer(), primary_key=True))


@pytest.fixture
async def threads(tmp_path: Path) -> AsyncIterator[ThreadedSqlite]:
    engine = await open_database(f"sqlite:///{tmp_path / 'bot.db'}")
    sync = thread_engine(engine)
    assert sync is not None, "a SQLite file gets the store's own engine"
    threaded = ThreadedSqlite(sync)
    await threaded.run(lambda conn: _TABLE.create(conn), write=True)
    yield threaded
    threaded.close()
    await engine.dispose()


def _count(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(_TABLE)).scalar_one())


async def test_work_that_returns_is_committed_and_work_that_raises_is_rolled_back(
    threads: ThreadedSqlite,
) -> None:
    await threads.run(lambda conn: conn.execute(_TABLE.insert().values(n=1)), write=True)

    def insert_then_fail(conn: Connection) -> None:
        conn.execute(_TABLE.insert().values(n=2))
        raise RuntimeError("the work failed")

    with pytest.raises(RuntimeError, match="the work failed"):
        await threads.run(insert_then_fail, write=True)
    assert await threads.run(_count, write=False) == 1


async def test_concurrent_writers_take_turns_on_one_thread(threads: ThreadedSqlite) -> None:
    """Fifty writers at once: none waits on another's lock (no 'database is locked')."""
    seen: set[str] = set()

    def insert(n: int) -> object:
        def work(conn: Connection) -> None:
            seen.add(threading.current_thread().name)
            conn.execute(_TABLE.insert().values(n=n))

        return work

    await asyncio.gather(*(threads.run(insert(n), write=True) for n in range(50)))
    assert await threads.run(_count, write=False) == 50
    assert len(seen) == 1 and next(iter(seen)).startswith("store-write")


async def test_a_transaction_still_queued_when_its_caller_is_cancelled_never_runs(
    threads: ThreadedSqlite,
) -> None:
    release = threading.Event()
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def hold(conn: Connection) -> None:
        loop.call_soon_threadsafe(started.set)
        release.wait(10)

    holding = asyncio.ensure_future(threads.run(hold, write=True))
    await asyncio.wait_for(started.wait(), 5)
    queued = asyncio.ensure_future(
        threads.run(lambda conn: conn.execute(_TABLE.insert().values(n=7)), write=True)
    )
    await asyncio.sleep(0)  # queued behind `hold`
    queued.cancel()
    release.set()
    await holding
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert await threads.run(_count, write=False) == 0


async def test_an_in_memory_database_has_no_thread_engine() -> None:
    """A second engine on `:memory:` would open a second, empty database: the store keeps the
    async engine there."""
    engine = await open_database("sqlite:///:memory:")
    try:
        assert thread_engine(engine) is None
    finally:
        await engine.dispose()
