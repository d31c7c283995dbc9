"""Store alternatives on SQLite, measured only: the store as it is against the same statements
run on one plain sqlite3 connection held by one thread, and on the event loop's thread.

`python -m bench.store_alternatives [--exports 10000]` prints a table; not part of `python -m
bench` (it measures options, not the product), whose `bench.store` reports the "today" and "one
thread" columns with this module's `measure`. Three operations, at 10,000 started exports
(one watch each): the already-watching path (`Store.subscribe` of a watch that exists: one
read), a new watch (`Store.subscribe` of a new channel: the export upsert, the re-read, the
insert), and one poll's store work (`claim_due` of 50, then 50 `record_poll`), per export.

"today" runs the real `bot.store.Store` (on a SQLite file: a transaction is one hand-off to
its own thread, or none for the short reads and writes of a command's or a poll's path,
SQLAlchemy Core on a synchronous connection, see bot.sqlite_thread; until issue 14 it was the
async engine over aiosqlite, at 2.8/8.6/2.9 ms here). Its SQL is
recorded as it runs (statement, parameters, transaction ends: from SQLAlchemy's events, and
what the store runs on the sqlite3 connection itself, its BEGIN and prepared statements), and
"one thread" replays exactly those statements with the stdlib sqlite3 on one connection owned
by one worker thread, one hand-off per operation (as a store built that way would do), on a
copy of the database taken before the phase, so inserts and claims find the same rows.
"inline" replays them on the event loop's thread (no hand-off): the floor. SQLAlchemy's
statement building and execution are left out of both replays: they are what "today" adds.
CPU is `time.process_time()` of this process (every thread), median of 3 rounds; "today"
includes the recording hooks (Python callbacks per statement: a few µs of its milliseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

Op = list[tuple[str, Any]]  # ("sql", (statement, params, many)) | ("end", "COMMIT"/"ROLLBACK")


class Recorder:
    """Every statement and transaction end the engine runs, grouped per operation."""

    def __init__(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        self.ops: list[Op] = []
        self.current: Op | None = None
        # Every engine: on a SQLite file the store runs its statements on an engine of its own
        # (bot.db.thread_engine), not on the async one the bot opens.
        self._listeners = (
            ("before_cursor_execute", self._statement),
            ("commit", lambda _conn: self._end("COMMIT")),
            ("rollback", lambda _conn: self._end("ROLLBACK")),
        )
        for name, listener in self._listeners:
            event.listen(Engine, name, listener)
        # And what runs on the sqlite3 connection itself, past SQLAlchemy's events: the BEGIN
        # of bot.db's hook and the store's prepared statements (bot.sqlite_thread).
        import bot.db
        import bot.sqlite_thread

        self._driver_execute = original = bot.db.driver_execute
        self._patched = (bot.db, bot.sqlite_thread)

        def recording(driver: sqlite3.Connection, sql: str, values: Any = ()) -> Any:
            self._statement(None, None, sql, values, None, False)
            return original(driver, sql, values)

        for module in self._patched:
            module.driver_execute = recording  # type: ignore[attr-defined]

    def close(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        for module in self._patched:
            module.driver_execute = self._driver_execute  # type: ignore[attr-defined]

        for name, listener in self._listeners:
            event.remove(Engine, name, listener)

    def _statement(self, _c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool):
        # A WAL checkpoint the store hands its writer thread now and then (bot.sqlite_thread)
        # may run while any operation is recorded: housekeeping, not the operation's.
        if self.current is not None and not statement.startswith("PRAGMA wal_checkpoint"):
            self.current.append(("sql", (statement, params, many)))

    def _end(self, what: str) -> None:
        if self.current is not None:
            self.current.append(("end", what))

    def start(self) -> None:
        self.current = []

    def stop(self) -> None:
        if self.current is not None:
            self.ops.append(self.current)
        self.current = None


def replay(conn: sqlite3.Connection, op: Op) -> None:
    """Run one recorded operation's statements (fetching every row, as the store does)."""
    for kind, item in op:
        if kind == "end":
            if conn.in_transaction:
                conn.execute(item)
            continue
        statement, params, many = item
        if many:
            conn.executemany(statement, params)
        else:
            conn.execute(statement, params).fetchall()


def open_plain(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in (
        "journal_mode=WAL",
        "busy_timeout=5000",
        "foreign_keys=ON",
        "synchronous=NORMAL",
    ):
        conn.execute(f"PRAGMA {pragma}")
    return conn


async def _cpu(run: Callable[[], Any]) -> float:
    """CPU seconds of this process (every thread: aiosqlite's worker too) while `run` runs."""
    started = time.process_time()
    await run()
    return time.process_time() - started


async def measure(
    exports: int,
    rounds: int,
    *,
    ops: int = 300,
    workdir: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, float]]:
    """CPU µs per operation, median of `rounds`: {operation: {"today", "one thread", "inline"}}.

    `ops` subscribe calls per phase (at most `exports`); the poll phase claims up to 1,000
    exports in batches of 50. Shared with `bench.store`, which reports "today" in the suite.
    """
    if not (1 <= ops <= exports and exports >= 50):
        raise ValueError(
            f"need 1 <= ops <= exports and exports >= 50, got ops={ops}, exports={exports}"
        )
    results: dict[str, dict[str, list[float]]] = {}
    for r in range(rounds):
        for name, figures in (await _round(exports, r, ops, workdir, log)).items():
            row = results.setdefault(name, {})
            for key, value in figures.items():
                row.setdefault(key, []).append(value)
    return {
        name: {k: statistics.median(v) for k, v in row.items()} for name, row in results.items()
    }


async def _round(
    exports: int, r: int, n: int, workdir: Path | None, log: Callable[[str], None]
) -> dict[str, dict[str, float]]:
    """One round: a fresh database, the three phases, each measured three ways."""
    from bench.common import BENCH_TEAM, Watch, seed_watches
    from bot.db import create_engine
    from bot.models import Export, ExportState
    from bot.store import PollResult, Store, WatchCaps

    out: dict[str, dict[str, float]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="store-alt-", dir=workdir))
    db = tmp / "bot.db"
    url = f"sqlite:///{db}"
    now = datetime.now(UTC)
    gids = [str(1_700_000_000_000_000 + i) for i in range(exports)]
    watches = [
        Watch(g, f"C{i % 100:04d}", now + timedelta(seconds=i % 5)) for i, g in enumerate(gids)
    ]
    await asyncio.to_thread(seed_watches, url, watches, via_subscribe=0)
    engine = create_engine(url)
    store = Store(engine)
    recorder = Recorder()
    team = BENCH_TEAM

    def export(gid: str) -> Export:
        return Export(gid=gid, state=ExportState.STARTED, raw_state="started")

    async def recorded(calls: list[Callable[[], Any]]) -> None:
        for call in calls:
            recorder.start()
            await call()
            recorder.stop()

    caps = WatchCaps(per_user=20, per_channel=50)  # the bot's defaults, as it passes them
    existing = [
        (
            lambda w=w: store.subscribe(
                team_id=team,
                channel_id=w.channel_id,
                user_id="U1",
                export=export(w.gid),
                now=now,
                next_poll_at=now,
                caps=caps,
            )
        )
        for w in watches[:n]
    ]
    new = [
        (
            lambda g=g, i=i: store.subscribe(
                team_id=team,
                channel_id=f"CNEW{i:05d}",
                user_id=f"U{i}",
                export=export(g),
                now=now,
                next_poll_at=now,
                caps=caps,
            )
        )
        for i, g in enumerate(gids[:n])
    ]
    # Every seeded export is due within 5 s: each batch claims 50 until 1,000 (or all) are done.
    batches = min(20, exports // 50)
    polled: list[int] = []

    async def one_poll_batch() -> None:
        claimed = await store.claim_due(
            owner="bench",
            now=now + timedelta(seconds=10),
            lease=timedelta(seconds=60),
            limit=50,
        )
        for row in claimed:
            await store.record_poll(
                row.gid,
                owner="bench",
                now=now,
                result=PollResult(next_poll_at=now + timedelta(hours=1), export=export(row.gid)),
            )
        polled.append(len(claimed))

    phases: list[tuple[str, list[Callable[[], Any]]]] = [
        ("already watching", existing),
        ("new watch", new),
        ("poll (per export)", [one_poll_batch] * batches),
    ]
    for name, calls in phases:
        snapshot = tmp / f"{name[:3]}.db"
        await engine.dispose()  # a quiet file to copy (WAL checkpointed on close)
        with sqlite3.connect(db) as src, sqlite3.connect(snapshot) as dst:
            src.backup(dst)
        recorder.ops.clear()
        today = await _cpu(lambda calls=calls: recorded(calls))
        ops = list(recorder.ops)
        # Per export polled for the poll phase (each claim must find 50), per call otherwise.
        count = sum(polled) if polled else len(calls)
        if polled and polled != [50] * batches:
            raise RuntimeError(f"claims found {polled}, not {batches} x 50 due exports")
        polled.clear()
        shutil.copy(snapshot, tmp / "inline.db")
        pool = ThreadPoolExecutor(1)
        conn = await asyncio.wrap_future(pool.submit(open_plain, snapshot))

        async def threaded(
            ops: list[Op] = ops, conn: sqlite3.Connection = conn, pool: Any = pool
        ) -> None:
            for op in ops:
                await asyncio.wrap_future(pool.submit(replay, conn, op))

        one_thread = await _cpu(threaded)
        pool.submit(conn.close).result()
        pool.shutdown()
        inline_conn = open_plain(tmp / "inline.db")

        async def inline(ops: list[Op] = ops, conn: sqlite3.Connection = inline_conn) -> None:
            for op in ops:
                replay(conn, op)

        floor = await _cpu(inline)
        inline_conn.close()
        out[name] = {
            key: cpu / count * 1e6
            for key, cpu in (("today", today), ("one thread", one_thread), ("inline", floor))
        }
        figures = out[name]
        log(
            f"round {r + 1}: {name}: today {figures['today']:,.0f} µs, one thread"
            f" {figures['one thread']:,.0f} µs, inline {figures['inline']:,.0f} µs"
            f" ({len(ops)} ops, {sum(len(o) for o in ops)} steps)"
        )
    recorder.close()
    store.close()
    await engine.dispose()
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.store_alternatives")
    parser.add_argument("--exports", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", type=int, default=300, help="subscribe calls per phase")
    args = parser.parse_args()
    table = asyncio.run(
        measure(args.exports, args.rounds, ops=args.ops, log=lambda line: print(line, flush=True))
    )
    print(f"\nCPU per operation at {args.exports:,} exports, median of {args.rounds} (µs):")
    print("| operation | today (bot.store) | one thread (sqlite3) | inline (sqlite3) |")
    print("|---|---|---|---|")
    for name, row in table.items():
        print(f"| {name} | {row['today']:,.0f} | {row['one thread']:,.0f} | {row['inline']:,.0f} |")


if __name__ == "__main__":
    main()
