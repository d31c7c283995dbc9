"""The store's SQLite transactions: each one whole, on a synchronous connection, in a thread.

Why: SQLAlchemy's async engine over aiosqlite hands every cursor call to aiosqlite's thread and
back (pool checkout, BEGIN, execute, fetch, COMMIT, the pool's reset), each hand-off waking a
thread and waiting for the GIL: a one-row read cost 2.8 ms of CPU, a new watch 8.6 ms
(`python -m bench.store_alternatives`). Here a transaction is one hand-off: the store passes a
function of a synchronous Connection, and the thread checks out a connection, begins, runs
it, commits and hands back its return value.

Two threads, each a FIFO queue: one for writes, one for reads. A transaction runs to its end
before the next one on its thread starts, so this process's writers never wait on each
other's BEGIN IMMEDIATE (and need no lock), and reads (BEGIN DEFERRED, WAL) never wait on a
writer. A task cancelled while its transaction waits in the queue takes it out; one cancelled
while it runs lets it finish (commit or roll back) and drops the result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy.engine import Connection, Engine

from bot.db import SQLITE_BEGIN_OPTION

T = TypeVar("T")


class ThreadedSqlite:
    """The store's way to a SQLite file: a writer thread and a reader thread (see module doc)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-write")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="store-read")

    @property
    def engine(self) -> Engine:
        return self._engine

    async def run(self, work: Callable[[Connection], T], *, write: bool) -> T:
        """`work` in one transaction: BEGIN IMMEDIATE on the writer thread, or DEFERRED on
        the reader thread; committed when it returns, rolled back when it raises."""
        loop = asyncio.get_running_loop()
        if write:
            return await loop.run_in_executor(self._writer, self._transaction, work, "IMMEDIATE")
        return await loop.run_in_executor(self._reader, self._transaction, work, "DEFERRED")

    def _transaction(self, work: Callable[[Connection], T], begin: str) -> T:
        with self._engine.connect() as conn:
            conn.execution_options(**{SQLITE_BEGIN_OPTION: begin})
            with conn.begin():
                return work(conn)

    def close(self) -> None:
        """Stop the threads (after what they have queued) and close the connections."""
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)
        self._engine.dispose()
