"""The store's SQLite threads (bot.sqlite_thread): whole transactions, one at a time per thread.

The store's own tests (tests/test_store.py) run every query through this path on SQLite; these
check what is particular to it: commit and rollback around the work, writers that never wait
on each other, a transaction dropped from the queue when its caller is cancelled, and short
reads on the loop's own thread that never wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot.db import open_database, thread_engine, upgrade
from bot.followup_store import _AUDIT_THREADS
from bot.models import Export, ExportState
from bot.sqlite_thread import BUSY, CHECKPOINT_EVERY, ThreadedSqlite, prepared, statement_rows
from bot.store import (
    _ACTIVE_SUBSCRIPTION,
    _COUNT_WATCHERS,
    Store,
    UTCDateTime,
    subscription_of,
)

T = TypeVar("T")

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

_COUNT = sa.select(sa.func.count()).select_from(_TABLE)
#: A statement that must wait for the write lock: how a test makes SQLite say busy to read_here.
_INSERT = _TABLE.insert().values(n=sa.bindparam("n")).returning(_TABLE.c.n)


def _here(threads: ThreadedSqlite, statement: sa.Executable, **parameters: object) -> object:
    return threads.read_here(statement, parameters)


async def test_a_read_here_runs_on_the_loop_thread_and_sees_what_was_committed(
    threads: ThreadedSqlite,
) -> None:
    await threads.run(lambda conn: conn.execute(_TABLE.insert().values(n=1)), write=True)
    assert _here(threads, _COUNT) == [(1,)]
    await threads.run(lambda conn: conn.execute(_TABLE.insert().values(n=2)), write=True)
    assert _here(threads, _COUNT) == [(2,)]  # each read is a snapshot of its own


def _take_the_write_lock(path: Path) -> sqlite3.Connection:
    """Another program's connection in a write transaction: a reader never waits for it in WAL
    mode, but a statement that wants to write too must (SQLite answers busy)."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    return holder


async def _ticking_while(work: Awaitable[T]) -> tuple[T, int]:
    """`work`'s result, and how often a 10 ms timer fired on the event loop meanwhile."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(tick())
    try:
        return await work, ticks
    finally:
        ticking.cancel()


async def test_a_read_here_never_waits_for_a_writer_and_says_busy_when_it_would(
    threads: ThreadedSqlite, tmp_path: Path
) -> None:
    holder = _take_the_write_lock(tmp_path / "bot.db")
    try:
        started = time.monotonic()
        assert _here(threads, _COUNT) == [(0,)]  # WAL: the writer does not hold readers up
        assert _here(threads, _INSERT, n=5) is BUSY
        assert time.monotonic() - started < 2.5  # not the other connections' busy timeout, 5 s
    finally:
        holder.close()
    assert _here(threads, _COUNT) == [(0,)]  # nothing was written
    assert _here(threads, _INSERT, n=5) == [(5,)]  # the same connection, usable again


async def test_a_short_read_sqlite_refuses_waits_in_the_reader_thread_not_the_loop(
    tmp_path: Path,
) -> None:
    """Store.read_short hands a statement SQLite refused to the reader thread, which waits out
    the lock while the event loop goes on."""
    engine = await open_database(f"sqlite:///{tmp_path / 'bot.db'}")
    store = Store(engine)
    try:
        await store.write(lambda conn: _TABLE.create(conn))
        holder = _take_the_write_lock(tmp_path / "bot.db")
        threading.Timer(0.3, holder.close).start()
        rows, ticks = await _ticking_while(store.read_short(_INSERT, {"n": 3}))
        assert rows == [(3,)]
        assert ticks >= 10, "the loop went on while the statement waited for the lock"
    finally:
        store.close()
        await engine.dispose()


async def test_a_read_here_from_another_thread_is_not_taken(threads: ThreadedSqlite) -> None:
    assert _here(threads, _COUNT) == [(0,)]  # this thread owns the connection now
    found: list[object] = []
    other = threading.Thread(target=lambda: found.append(_here(threads, _COUNT)))
    other.start()
    other.join()
    assert found == [BUSY]


async def test_a_read_here_that_fails_drops_its_connection_and_the_reader_thread_reports_it(
    tmp_path: Path,
) -> None:
    engine = await open_database(f"sqlite:///{tmp_path / 'bot.db'}")
    store = Store(engine)
    missing = sa.select(sa.Table("missing", sa.MetaData(), sa.Column("n", sa.Integer())))
    try:
        with pytest.raises(sa.exc.OperationalError, match="no such table"):
            await store.read_short(missing, {})
        await store.write(lambda conn: _TABLE.create(conn))
        assert await store.read_short(_COUNT, {}) == [(0,)]
    finally:
        store.close()
        await engine.dispose()


# -- short writes on the loop's thread (write_here) -------------------------------------------


def _insert(n: int) -> Callable[[Connection], object]:
    return lambda conn: statement_rows(conn, _INSERT, {"n": n})


async def test_a_write_here_commits_on_the_loop_thread_and_rolls_back_what_raises(
    threads: ThreadedSqlite,
) -> None:
    ran_on: list[int] = []

    def insert_one(conn: Connection) -> object:
        ran_on.append(threading.get_ident())
        return statement_rows(conn, _INSERT, {"n": 1})

    assert threads.write_here(insert_one) == [(1,)]
    assert ran_on == [threading.get_ident()]
    assert await threads.run(_count, write=False) == 1  # committed: the reader thread sees it

    def insert_then_fail(conn: Connection) -> None:
        statement_rows(conn, _INSERT, {"n": 2})
        raise RuntimeError("the work failed")

    with pytest.raises(RuntimeError, match="the work failed"):
        threads.write_here(insert_then_fail)
    with pytest.raises(sa.exc.IntegrityError, match="UNIQUE"):
        threads.write_here(_insert(1))
    assert threads.write_here(_insert(3)) == [(3,)]  # the connection is still usable
    assert await threads.run(
        lambda conn: conn.execute(sa.select(_TABLE.c.n)).all(), write=False
    ) == [
        (1,),
        (3,),
    ]


async def test_a_write_here_never_waits_for_the_lock_and_says_busy_when_it_would(
    threads: ThreadedSqlite, tmp_path: Path
) -> None:
    holder = _take_the_write_lock(tmp_path / "bot.db")
    try:
        started = time.monotonic()
        assert threads.write_here(_insert(1)) is BUSY
        assert time.monotonic() - started < 2.5  # not the other connections' busy timeout, 5 s
    finally:
        holder.close()
    assert threads.write_here(_insert(1)) == [(1,)]


async def test_a_write_here_from_another_thread_is_not_taken(threads: ThreadedSqlite) -> None:
    assert _here(threads, _COUNT) == [(0,)]  # this thread owns the connection now
    found: list[object] = []
    other = threading.Thread(target=lambda: found.append(threads.write_here(_insert(1))))
    other.start()
    other.join()
    assert found == [BUSY]
    assert _here(threads, _COUNT) == [(0,)]


async def test_a_short_write_sqlite_refuses_waits_in_the_writer_thread_not_the_loop(
    tmp_path: Path,
) -> None:
    """Store.write(short=True) hands a transaction SQLite refused to the writer thread, which
    waits out the lock while the event loop goes on."""
    engine = await open_database(f"sqlite:///{tmp_path / 'bot.db'}")
    store = Store(engine)
    try:
        await store.write(lambda conn: _TABLE.create(conn))
        holder = _take_the_write_lock(tmp_path / "bot.db")
        threading.Timer(0.3, holder.close).start()
        rows, ticks = await _ticking_while(store.write(_insert(4), short=True))
        assert rows == [(4,)]
        assert ticks >= 10, "the loop went on while the transaction waited for the lock"
    finally:
        store.close()
        await engine.dispose()


_BLOBS = sa.Table(
    "blobs",
    sa.MetaData(),
    sa.Column("n", sa.Integer(), primary_key=True),
    sa.Column("data", sa.LargeBinary()),
)
_INSERT_BLOB = _BLOBS.insert().values(n=sa.bindparam("n"), data=sa.bindparam("data"))


def _rows_in_the_database_file(path: Path) -> int:
    """Rows of `blobs` in the database file itself, as if the WAL were not there: what
    checkpoints have copied into it."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as db:
        return int(db.execute("SELECT count(*) FROM blobs").fetchone()[0])


async def test_writes_here_never_checkpoint_on_the_loop_thread_the_writer_thread_does(
    threads: ThreadedSqlite, tmp_path: Path
) -> None:
    """A checkpoint syncs the file: the loop's thread leaves it to the writer thread, once
    every CHECKPOINT_EVERY writes, even past SQLite's own threshold of 1000 WAL pages."""
    path = tmp_path / "bot.db"
    await threads.run(lambda conn: _BLOBS.create(conn), write=True)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    blob = b"x" * 80_000  # about 20 pages: the writes below fill well over 1000
    for n in range(CHECKPOINT_EVERY - 1):
        threads.write_here(
            lambda conn, n=n: statement_rows(conn, _INSERT_BLOB, {"n": n, "data": blob})
        )
    assert _rows_in_the_database_file(path) == 0
    threads.write_here(lambda conn: statement_rows(conn, _INSERT_BLOB, {"n": -1, "data": blob}))
    await threads.run(lambda conn: None, write=True)  # after the checkpoint in the writer's queue
    assert _rows_in_the_database_file(path) == CHECKPOINT_EVERY


# -- statements run on the driver (Prepared, statement_rows) ------------------------------------


async def test_a_prepared_statement_answers_what_sqlalchemy_answers(tmp_path: Path) -> None:
    """Types both ways (aware datetimes in and out), literal values, LIMIT and RETURNING, on
    the real schema: the rows are SQLAlchemy's own, as tuples."""
    engine = await open_database(f"sqlite:///{tmp_path / 'bot.db'}")
    await upgrade(engine)
    store = Store(engine)
    try:
        now = datetime(2026, 3, 1, 20, 0, tzinfo=timezone(timedelta(hours=9)))
        export = Export(gid="42", state=ExportState.STARTED, organization_name="Acme")
        for channel in ("C1", "C2"):
            sub, _ = await store.subscribe(
                team_id="T1",
                channel_id=channel,
                user_id="U1",
                export=export,
                now=now,
                next_poll_at=now,
            )
            await store.set_card_ts(sub.id, f"17.{channel}")
        for statement, parameters in [
            (_ACTIVE_SUBSCRIPTION, {"channel_id": "C2", "gid": "42"}),
            (_AUDIT_THREADS, {"gid": "42", "limit": 1}),
            (_COUNT_WATCHERS, {"gid": "42"}),
        ]:
            ours = await store.write(lambda c, s=statement, p=parameters: statement_rows(c, s, p))
            theirs = await store.read(
                lambda c, s=statement, p=parameters: [tuple(r) for r in c.execute(s, p)]
            )
            assert ours == theirs and ours, statement
        (row,) = await store.read_short(_ACTIVE_SUBSCRIPTION, {"channel_id": "C1", "gid": "42"})
        assert subscription_of(row).created_at == now and row[6].tzinfo is not None
    finally:
        store.close()
        await engine.dispose()


async def test_a_prepared_statement_raises_what_sqlalchemy_raises(threads: ThreadedSqlite) -> None:
    insert = _TABLE.insert().values(n=sa.bindparam("n"))
    await threads.run(lambda conn: statement_rows(conn, insert, {"n": 1}), write=True)
    with pytest.raises(sa.exc.IntegrityError, match="UNIQUE"):
        await threads.run(lambda conn: statement_rows(conn, insert, {"n": 1}), write=True)
    with pytest.raises(sa.exc.StatementError, match="naive"):
        at = sa.select(sa.literal(1)).where(sa.bindparam("at", type_=UTCDateTime()).is_not(None))
        await threads.run(
            lambda conn: statement_rows(conn, at, {"at": datetime(2026, 1, 1)}), write=False
        )
    with pytest.raises(ValueError, match="IN list"):
        prepared(sa.select(_TABLE).where(_TABLE.c.n.in_((1, 2))), threads.engine.dialect)
