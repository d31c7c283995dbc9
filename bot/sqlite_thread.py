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
between vCPUs); on the started-export command that was most of the store's cost. Such a read
is one statement, `Prepared` once: SQLAlchemy compiles it (its SQL, the order of its
parameters, their type conversions) and the sqlite3 connection runs it. SQLAlchemy's execution
path around a statement (execution context, result object, events) cost several times the
statement itself in the running bot.

A short write on a command's path (the new watch and its card's ts) or a poll's (its record)
can skip it too (`write_here`): BEGIN IMMEDIATE on that same connection says busy at once when
another connection holds the write lock, and the transaction goes to the writer thread instead.
A new watch's two hand-offs to the writer thread were a tenth of its CPU (issue 14, measured);
on the loop's thread each transaction is a few prepared statements, in WAL mode without a sync
(about ten WAL pages for a new watch). A writer-thread transaction that starts meanwhile waits
for it in SQLite's busy handler (its first sleep is a millisecond).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, StatementError
from sqlalchemy.sql.expression import Executable

from bot.db import SQLITE_BEGIN_OPTION, driver_execute, sqlite_driver

T = TypeVar("T")
log = logging.getLogger(__name__)


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


#: Writes on the loop's thread (`write_here`) between two WAL checkpoints on the writer thread:
#: a new watch writes about ten pages (measured), so between them the WAL grows by less than
#: SQLite's own autocheckpoint threshold (1000 pages).
CHECKPOINT_EVERY = 64


def _checkpoint_done(future: asyncio.Future[None]) -> None:
    """A checkpoint nobody awaits: a failure is logged (the next one, or a commit on the
    writer thread, checkpoints what this one left)."""
    if not future.cancelled() and future.exception() is not None:
        log.warning("WAL checkpoint failed: %s", future.exception())


class Busy:
    """What `ThreadedSqlite.read_here` and `write_here` return instead of waiting (one
    instance, `BUSY`)."""

    def __repr__(self) -> str:
        return "BUSY"


BUSY = Busy()


def _busy(exc: OperationalError) -> bool:
    """SQLite said busy or locked (primary codes 5 and 6, whatever the extended code)."""
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


Row = tuple[Any, ...]


class Prepared:
    """One Core statement, compiled once for SQLite, run on a sqlite3 connection itself: the
    SQL, the order of its parameters and their conversions both ways are SQLAlchemy's.

    For the statements on a command's path (`statement_rows`, `ThreadedSqlite.read_here`).
    Parameters are bound by key (a `bindparam`'s name); literal values in the statement are
    bound as compiled. An IN list (an expanding parameter, rendered per call) is refused:
    write it as ORs.
    """

    __slots__ = ("_binds", "_results", "sql")

    def __init__(self, statement: Executable, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if compiled.positiontup is None:
            raise ValueError(f"{dialect.name} binds parameters by name, not by position")
        binds = [compiled.binds[name] for name in compiled.positiontup]
        if any(bind.expanding or bind.callable is not None for bind in binds):
            raise ValueError("an IN list or a lambda parameter cannot be prepared once")
        self.sql = str(compiled)
        self._binds = tuple(
            (
                bind.key,
                bind.required,
                bind.value,
                bind.type.dialect_impl(dialect).bind_processor(dialect),
            )
            for bind in binds
        )
        columns = getattr(statement, "exported_columns", ())
        processors = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        )
        self._results = processors if any(processors) else None

    def run(self, driver: sqlite3.Connection, given: Mapping[str, Any]) -> list[Row]:
        """The statement's rows on `driver`, in whatever transaction it is in. Errors are
        raised as SQLAlchemy raises them: StatementError for a parameter it cannot convert,
        the DBAPIError subclass (IntegrityError, OperationalError...) for SQLite's."""
        try:
            values = self._parameters(given)
        except Exception as exc:
            name = f"{type(exc).__module__}.{type(exc).__name__}"
            raise StatementError(f"({name}) {exc}", self.sql, dict(given), exc) from exc
        fetched = driver_execute(driver, self.sql, values).fetchall()
        results = self._results
        if results is None:
            return fetched
        return [
            tuple(v if p is None else p(v) for p, v in zip(results, row, strict=True))
            for row in fetched
        ]

    def _parameters(self, given: Mapping[str, Any]) -> Row:
        values = []
        for key, required, literal, process in self._binds:
            value = given[key] if required or key in given else literal
            values.append(value if process is None else process(value))
        return tuple(values)


_PREPARED: dict[Executable, Prepared] = {}


def prepared(statement: Executable, dialect: Dialect) -> Prepared:
    """`statement` compiled for SQLite, once per process (statements are module constants)."""
    found = _PREPARED.get(statement)
    if found is None:
        found = _PREPARED[statement] = Prepared(statement, dialect)
    return found


def statement_rows(
    conn: Connection, statement: Executable, parameters: Mapping[str, Any]
) -> list[Row]:
    """One statement's rows as tuples, in `conn`'s transaction: on a sqlite3 connection (the
    store's threads) through `Prepared` on the driver, with its errors raised as SQLAlchemy
    raises them (IntegrityError, OperationalError...); elsewhere, or while SQL is logged,
    through SQLAlchemy.

    For the statements on a command's path, where SQLAlchemy's execution path cost several
    times the statement itself. `statement` must be built once (a module constant, or cached):
    each one is compiled and kept for the life of the process."""
    driver = sqlite_driver(conn)
    if driver is None:
        result = conn.execute(statement, parameters)
        return [tuple(row) for row in result] if result.returns_rows else []
    return prepared(statement, conn.dialect).run(driver, parameters)


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
        self._here: tuple[int, Connection, sqlite3.Connection] | None = self._connect_here()
        self._writes_here = 0  # since the last checkpoint handed to the writer thread

    @property
    def engine(self) -> Engine:
        return self._engine

    async def run(self, work: Callable[[Connection], T], *, write: bool) -> T:
        """`work` in one transaction: BEGIN IMMEDIATE on the writer thread, or DEFERRED on
        the reader thread; committed when it returns, rolled back when it raises."""
        if write:
            return await self._writer.submit(lambda: self._transaction(work, "IMMEDIATE"))
        return await self._reader.submit(lambda: self._transaction(work, "DEFERRED"))

    def read_here(self, statement: Executable, parameters: Mapping[str, Any]) -> list[Row] | Busy:
        """`statement`'s rows (`Prepared` once), read on the calling thread without waiting for
        anything; `BUSY` when SQLite would have had to wait, or refused it otherwise (or the
        caller is not the thread that made this object), so the caller reads through `run`
        instead, which waits and reports an error as every read does.

        No BEGIN: one statement is one snapshot already. Nor the file check of `bot.dbfile`
        (a read of a replaced file finds nothing to act on; the writes that follow check)."""
        here = self._owned_here()
        if here is None:
            return BUSY
        try:
            return prepared(statement, self._engine.dialect).run(here[1], parameters)
        except DBAPIError as exc:
            if not (isinstance(exc, OperationalError) and _busy(exc)):
                self._drop_here()
            return BUSY
        except BaseException:
            self._drop_here()
            raise

    def write_here(self, work: Callable[[Connection], T]) -> T | Busy:
        """`work` in one write transaction on the calling thread, without waiting for SQLite's
        write lock: `BUSY` when another connection holds it (or the caller is not the thread
        that made this object), so the caller queues it on the writer thread instead. What
        `work` or SQLite raise is raised, the transaction rolled back, as `run` does.

        For the short writes of a command's or a poll's path (a few prepared statements): a
        hand-off to the writer thread cost more than the transaction. This connection never
        checkpoints the WAL on commit, which syncs the file: every `CHECKPOINT_EVERY` writes
        here hand a checkpoint to the writer thread."""
        here = self._owned_here()
        if here is None:
            return BUSY
        conn = here[0]
        try:
            transaction = conn.begin()
        except OperationalError as exc:
            if _busy(exc):
                return BUSY
            self._drop_here()
            raise
        except BaseException:
            self._drop_here()
            raise
        try:
            with transaction:
                done = work(conn)
        except DBAPIError as exc:  # rolled back; a refused row leaves the connection sound
            if not isinstance(exc, IntegrityError):
                self._drop_here()
            raise
        self._writes_here += 1
        if self._writes_here >= CHECKPOINT_EVERY:
            self._writes_here = 0
            self._writer.submit(self._checkpoint).add_done_callback(_checkpoint_done)
        return done

    def _owned_here(self) -> tuple[Connection, sqlite3.Connection] | None:
        """The calling thread's connection for `read_here` and `write_here`, or None when the
        caller is not the thread that made this object."""
        if self._here is None:
            self._here = self._connect_here()
        owner, conn, driver = self._here
        return (conn, driver) if owner == threading.get_ident() else None

    def _checkpoint(self) -> None:
        """On the writer thread: copy the WAL's pages into the database file (PASSIVE: it
        waits for nobody and leaves what readers still need)."""
        conn = self._connection("IMMEDIATE")
        driver_execute(conn.connection.driver_connection, "PRAGMA wal_checkpoint(PASSIVE)")

    def _connect_here(self) -> tuple[int, Connection, sqlite3.Connection]:
        """The calling thread's connection for `read_here`. Opening it runs the usual pragmas
        under the usual busy timeout, which is why the constructor opens the first; after a
        failed read the next one opens a replacement (the file is in WAL mode by then and the
        store's threads hold it open, so nothing there waits on a lock)."""
        conn = self._engine.connect()
        driver = conn.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        driver.execute("PRAGMA busy_timeout=0")
        driver.execute("PRAGMA wal_autocheckpoint=0")  # see write_here
        return threading.get_ident(), conn, driver

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
        conn = self._connection(begin)
        try:
            with conn.begin():
                return work(conn)
        except BaseException:
            self._drop(begin)
            raise

    def _connection(self, begin: str) -> Connection:
        """This thread's Connection (by begin mode), opened on first use."""
        conn = self._connections.get(begin)
        if conn is None:
            conn = self._engine.connect()
            conn.execution_options(**{SQLITE_BEGIN_OPTION: begin})
            self._connections[begin] = conn
        return conn

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
