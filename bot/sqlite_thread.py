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

A short read on a command's path can skip the hand-off (`read_here`): it runs on the calling
thread, on a connection of that thread whose busy timeout is zero, so it never waits: in WAL
mode a reader does not wait for writers, and in the rare moment it would (another process
recovering the WAL) SQLite says busy at once and the read goes to the reader thread instead.
A hand-off wakes two threads, each a context switch (and in a virtual machine an interrupt
between vCPUs); on the started-export command that was most of the store's cost.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from bot.db import SQLITE_BEGIN_OPTION

T = TypeVar("T")


class _Worker:
    """One thread taking jobs from a queue and handing each result back to its event loop.

    Leaner than `loop.run_in_executor` (whose concurrent.futures Future is chained to an
    asyncio one): 48 against 78-95 µs of CPU per hand-off, measured on this machine.
    """

    def __init__(self, name: str, *, on_exit: Callable[[], None] | None = None) -> None:
        self._on_exit = on_exit
        self._jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, job))
        return future

    def _serve(self) -> None:
        try:
            self._run_jobs()
        finally:
            if self._on_exit is not None:
                self._on_exit()  # on this thread, which owns what it closes

    def _run_jobs(self) -> None:
        while (item := self._jobs.get()) is not None:
            loop, future, job = item
            if future.cancelled():  # its caller gave up while it was queued: never run it
                continue
            try:
                result = job()
            except BaseException as exc:  # handed to the caller, whatever it is
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)

    def stop(self) -> None:
        """Finish what is queued, then end the thread."""
        self._jobs.put(None)
        self._thread.join()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Busy:
    """What `ThreadedSqlite.read_here` returns instead of waiting (one instance, `BUSY`)."""

    def __repr__(self) -> str:
        return "BUSY"


BUSY = Busy()


def _busy(exc: OperationalError) -> bool:
    """SQLite said busy or locked (primary codes 5 and 6, whatever the extended code)."""
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class ThreadedSqlite:
    """The store's way to a SQLite file: a writer thread and a reader thread (see module doc)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        #: Each thread's Connection, kept from one transaction to the next (by begin mode: the
        #: writer's is IMMEDIATE, the reader's DEFERRED; each touched by its own thread only).
        self._connections: dict[str, Connection] = {}
        self._writer = _Worker("store-write", on_exit=lambda: self._drop("IMMEDIATE"))
        self._reader = _Worker("store-read", on_exit=lambda: self._drop("DEFERRED"))
        #: The thread `read_here` runs on (the one making this object: the event loop's) and
        #: its connection, which never waits on a lock; opened here, where waiting is fine.
        self._here: tuple[int, Connection] | None = self._connect_here()

    @property
    def engine(self) -> Engine:
        return self._engine

    async def run(self, work: Callable[[Connection], T], *, write: bool) -> T:
        """`work` in one transaction: BEGIN IMMEDIATE on the writer thread, or DEFERRED on
        the reader thread; committed when it returns, rolled back when it raises."""
        if write:
            return await self._writer.submit(lambda: self._transaction(work, "IMMEDIATE"))
        return await self._reader.submit(lambda: self._transaction(work, "DEFERRED"))

    def read_here(self, work: Callable[[Connection], T]) -> T | Busy:
        """`work` in a read transaction on the calling thread, without waiting for anything;
        `BUSY` when SQLite would have had to wait (or the caller is not the thread that made
        this object), so the caller reads through `run` instead. `work` must be short."""
        if self._here is None:
            self._here = self._connect_here()
        owner, conn = self._here
        if owner != threading.get_ident():
            return BUSY
        try:
            with conn.begin():
                return work(conn)
        except OperationalError as exc:
            if _busy(exc):
                return BUSY
            self._drop_here()
            raise
        except BaseException:
            self._drop_here()
            raise

    def _connect_here(self) -> tuple[int, Connection]:
        """The calling thread's connection for `read_here`. Opening it runs the usual pragmas
        under the usual busy timeout, which is why the constructor opens the first; after a
        failed read the next one opens a replacement (the file is in WAL mode by then and the
        store's threads hold it open, so nothing there waits on a lock)."""
        conn = self._engine.connect()
        conn.execution_options(**{SQLITE_BEGIN_OPTION: "DEFERRED"})
        # Below SQLAlchemy: a statement through the Connection would begin a transaction.
        conn.connection.driver_connection.execute("PRAGMA busy_timeout=0")
        return threading.get_ident(), conn

    def _drop_here(self) -> None:
        here, self._here = self._here, None
        if here is not None:
            here[1].close()

    def _transaction(self, work: Callable[[Connection], T], begin: str) -> T:
        """One transaction on this thread's Connection. Checking a connection out of the pool
        and back in for every transaction was a third of a one-row read's CPU; the pool's
        reset on check-in had nothing left to do (each transaction ends in COMMIT or
        ROLLBACK). Anything raised drops the Connection (back to the pool, reset there), so
        the next transaction starts on a fresh one, as before."""
        conn = self._connections.get(begin)
        if conn is None:
            conn = self._engine.connect()
            conn.execution_options(**{SQLITE_BEGIN_OPTION: begin})
            self._connections[begin] = conn
        try:
            with conn.begin():
                return work(conn)
        except BaseException:
            self._drop(begin)
            raise

    def _drop(self, begin: str) -> None:
        conn = self._connections.pop(begin, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Stop the threads (after what they have queued; each closes its Connection as it
        ends) and close the connections."""
        self._writer.stop()
        self._reader.stop()
        self._drop_here()
        self._engine.dispose()
