"""The store's SQLite threads (bot.sqlite_thread): whole transactions, one at a time per thread.

The store's own tests (tests/test_store.py) run every query through this path on SQLite; these
check what is particular to it: commit and rollback around the work, writers that never wait
on each other, a transaction dropped from the queue when its caller is cancelled, and short
reads on the loop's own thread that never wait.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot.db import open_database, thread_engine
from bot.sqlite_thread import BUSY, ThreadedSqlite
from bot.store import Store

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


# -- reads on the calling thread (read_here, Store.read_short) ---------------------------------


async def test_a_read_here_runs_on_the_loop_thread_and_sees_what_was_committed(
    threads: ThreadedSqlite,
) -> None:
    await threads.run(lambda conn: conn.execute(_TABLE.insert().values(n=1)), write=True)
    ran_on: list[int] = []

    def count(conn: Connection) -> int:
        ran_on.append(threading.get_ident())
        return _count(conn)

    assert threads.read_here(count) == 1
    await threads.run(lambda conn: conn.execute(_TABLE.insert().values(n=2)), write=True)
    assert threads.read_here(count) == 2  # each read is a transaction of its own
    assert ran_on == [threading.get_ident()] * 2


def _take_the_write_lock(path: Path) -> sqlite3.Connection:
    """Another program's connection in a write transaction: a reader never waits for it in WAL
    mode, but a transaction that wants to write too must (SQLite answers busy)."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def _insert_then_count(conn: Connection) -> int:
    """Work that must wait for the write lock: how a test makes SQLite say busy to a reader."""
    conn.execute(_TABLE.insert().values(n=5))
    return _count(conn)


async def test_a_read_here_never_waits_for_a_writer_and_says_busy_when_it_would(
    threads: ThreadedSqlite, tmp_path: Path
) -> None:
    holder = _take_the_write_lock(tmp_path / "bot.db")
    try:
        started = time.monotonic()
        assert threads.read_here(_count) == 0  # WAL: the writer does not hold readers up
        assert threads.read_here(_insert_then_count) is BUSY
        assert time.monotonic() - started < 0.5  # the other connections' busy timeout is 5 s
    finally:
        holder.close()
    assert threads.read_here(_count) == 0  # the busy transaction was rolled back
    assert threads.read_here(_insert_then_count) == 1  # the same connection, usable again


async def test_a_short_read_sqlite_refuses_waits_in_the_reader_thread_not_the_loop(
    tmp_path: Path,
) -> None:
    """Store.read_short hands work SQLite refused to the reader thread, which waits out the
    lock while the event loop goes on."""
    engine = await open_database(f"sqlite:///{tmp_path / 'bot.db'}")
    store = Store(engine)
    try:
        await store.write(lambda conn: _TABLE.create(conn))
        holder = _take_the_write_lock(tmp_path / "bot.db")
        threading.Timer(0.3, holder.close).start()
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticking = asyncio.create_task(tick())
        assert await store.read_short(_insert_then_count) == 1
        ticking.cancel()
        assert ticks >= 10, "the loop went on while the work waited for the lock"
    finally:
        store.close()
        await engine.dispose()


async def test_a_read_here_from_another_thread_is_not_taken(threads: ThreadedSqlite) -> None:
    assert threads.read_here(_count) == 0  # this thread owns the connection now
    found: list[object] = []
    other = threading.Thread(target=lambda: found.append(threads.read_here(_count)))
    other.start()
    other.join()
    assert found == [BUSY]


async def test_a_read_here_that_fails_drops_its_connection_and_the_next_one_works(
    threads: ThreadedSqlite,
) -> None:
    with pytest.raises(sa.exc.OperationalError, match="no such table"):
        threads.read_here(lambda conn: conn.exec_driver_sql("SELECT * FROM missing").all())
    assert threads.read_here(_count) == 0
