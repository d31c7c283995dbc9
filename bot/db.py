"""Engine creation, URL normalisation and schema upgrades: the only place that knows drivers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import time
import weakref
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

if TYPE_CHECKING:  # Alembic is imported only when the schema is behind (see `upgrade`)
    from alembic.config import Config

from bot.dbfile import (
    DatabaseFileError,
    DatabaseUnavailable,
    SqliteFile,
    prepare,
    warn_if_readable_by_others,
)

__all__ = [
    "DatabaseFileError",
    "DatabaseUnavailable",
    "create_engine",
    "open_database",
    "thread_engine",
    "upgrade",
]

log = logging.getLogger(__name__)

#: Arbitrary constant key for `pg_advisory_xact_lock`, so replicas upgrade one at a time.
MIGRATION_LOCK_KEY = 0x61736E61  # "asna"

#: Execution option read by the SQLite "begin" hook: read-only transactions may start deferred.
SQLITE_BEGIN_OPTION = "sqlite_begin"

_KEEP = ("sqlite+aiosqlite", "postgresql+psycopg", "postgresql+asyncpg")
_REWRITE = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
}


def normalize_database_url(url: str) -> str:
    """Map the URLs people write (sqlite:///, postgres://) to the async drivers we ship."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(
            "DATABASE_URL must be a URL such as sqlite:///data/bot.db or "
            "postgresql://user@host/db; got something without a scheme."
        )
    scheme = scheme.lower()
    if scheme in _KEEP:
        return f"{scheme}://{rest}"
    if scheme in _REWRITE:
        return f"{_REWRITE[scheme]}://{rest}"
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        shown = f"{scheme}://..."
    raise ValueError(
        f"Unsupported database URL {shown}: use sqlite:///path or postgresql://..., "
        f"or one of the drivers {', '.join(_KEEP)}."
    )


def database_url_problem(url: str) -> str | None:
    """Why `url` cannot open a database, without repeating it (it may hold a password)."""
    try:
        make_url(normalize_database_url(url))
    except (ValueError, ArgumentError):
        scheme, sep, _ = url.partition("://")
        if not sep:
            return "not a URL: it has no scheme"
        if scheme.lower() not in (*_KEEP, *_REWRITE):
            return "unsupported database; use sqlite or postgresql"
        return "the URL cannot be parsed"
    return None


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """Build the async engine, with SQLite tuned for one process and PostgreSQL for restarts."""
    normalized = normalize_database_url(url)
    parsed = make_url(normalized)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_path(normalized)
        file = prepare(path) if path else None  # before the first connection would create it
        if path is not None:
            switch_to_wal(path)
        engine = create_async_engine(normalized, **kwargs)
        _install_sqlite_hooks(engine.sync_engine, file)
        if file is not None:
            _sqlite_files[engine.sync_engine] = file
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(normalized, **kwargs)


#: The file each SQLite engine opened (by identity), for the store's own engine on it.
_sqlite_files: weakref.WeakKeyDictionary[Engine, SqliteFile] = weakref.WeakKeyDictionary()


def thread_engine(engine: AsyncEngine) -> Engine | None:
    """A synchronous engine on the SQLite file `engine` opened, with the same hooks, for the
    store's threads (bot.sqlite_thread). None for PostgreSQL, and for in-memory databases: a
    second engine would open a second, empty one.

    Each thread opens connections of its own as transactions overlap; max_overflow=-1 so a
    burst of open read transactions never waits on the pool inside the reader thread.
    """
    file = _sqlite_files.get(engine.sync_engine)
    if file is None:
        return None
    sync = create_sync_engine(
        engine.url.set(drivername="sqlite+pysqlite"), pool_size=4, max_overflow=-1
    )
    _install_sqlite_hooks(sync, file)
    return sync


def _sqlite_path(normalized: str) -> Path | None:
    """The file a SQLite URL names; None for in-memory and `file:` URI databases."""
    parsed = make_url(normalized)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database:
        return None
    if database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().absolute()


def switch_to_wal(
    path: Path, *, patience: float = 10.0, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Put the file in WAL mode once, before the engine's first connection (SQLite keeps the
    mode in the file, so later connections find it there and switch nothing).

    Two connections switching a new file at the same moment can fail with 'database is locked'
    without SQLite ever calling its busy handler: each holds the shared lock the other must see
    go. That happened to replicas (or engines) starting together on a new file. Here the switch
    is retried for up to `patience` seconds, on a connection of its own that holds no lock in
    between. Any other failure is left to the first pooled connection, which runs the same
    pragma and reports it as every connection failure is reported.
    """
    deadline = time.monotonic() + patience
    delay = 0.005
    while True:
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=5.0, isolation_level=None)) as db:
                db.execute("PRAGMA journal_mode=WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            locked = "locked" in str(exc) or "busy" in str(exc)
            if not locked or time.monotonic() + delay > deadline:
                return
        except sqlite3.Error:
            return
        sleep(delay)
        delay = min(delay * 2, 0.25)


#: SQLAlchemy's statement log (LOG_SQL): while it is on, statements go through SQLAlchemy,
#: which logs them, and not around it (bot.sqlite_thread).
_SQL_LOG = logging.getLogger("sqlalchemy.engine.Engine")


def sql_logged() -> bool:
    return _SQL_LOG.isEnabledFor(logging.INFO)


def sqlite_driver(conn: Connection) -> sqlite3.Connection | None:
    """The sqlite3 connection under `conn` when a statement may go straight to it (the store's
    threads, SQL not logged); None for aiosqlite's, PostgreSQL's, or while SQL is logged."""
    driver = conn.connection.driver_connection
    if not isinstance(driver, sqlite3.Connection) or sql_logged():
        return None
    return driver


def driver_execute(driver: sqlite3.Connection, sql: str, values: Sequence[Any] = ()) -> Any:
    """`driver.execute`, with SQLite's errors raised as SQLAlchemy raises them (the DBAPIError
    subclass: IntegrityError, OperationalError...), so callers catch one kind either way."""
    try:
        return driver.execute(sql, values)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, values, exc, sqlite3.Error) from exc


def _install_sqlite_hooks(engine: Engine, file: SqliteFile | None) -> None:
    """Pragmas on every connection, and BEGIN IMMEDIATE so two writers never both read stale.

    The sqlite3 driver's own transaction handling is switched off (isolation_level=None) and we
    emit BEGIN ourselves: IMMEDIATE takes the write lock up front, so a read-then-write
    transaction (subscribe, claim) cannot be overtaken by another connection in between.
    With a file, each new connection and each transaction first checks that the file is still
    the one opened (bot.dbfile): nothing goes into a deleted file, nor into a new empty one.
    """
    if file is not None:

        @event.listens_for(engine, "do_connect")
        def _before_connect(*_: Any) -> None:
            file.check()

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.execute("PRAGMA journal_mode=WAL")  # already so for a file: switch_to_wal
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "IMMEDIATE")
        if mode not in ("IMMEDIATE", "DEFERRED"):
            raise ValueError(f"unknown SQLite begin mode {mode!r}")
        if file is not None:
            file.check()
        driver = sqlite_driver(conn)
        if driver is None:
            conn.exec_driver_sql(f"BEGIN {mode}")  # aiosqlite's, or logged (LOG_SQL)
        else:  # on the store's threads, not through SQLAlchemy: half a write's own CPU
            driver_execute(driver, f"BEGIN {mode}")


def migrations_path() -> str:
    """The Alembic scripts shipped inside the package, so upgrades work from a wheel."""
    return os.fspath(resources.files("bot") / "migrations")


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config built in code: no alembic.ini needed at run time."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", migrations_path())
    if connection is not None:
        config.attributes["connection"] = connection
    return config


_REVISION_LINE = re.compile(r"^(down_revision|revision)\s*(?::[^=]*)?=\s*(.+?)\s*$", re.MULTILINE)
_QUOTED = re.compile(r"[\"']([^\"']+)[\"']")


def head_revision(versions: Path | None = None) -> str | None:
    """The one head of the shipped migrations, read from their `revision` lines; None when
    that is not plain (several heads, an unreadable file): then Alembic itself decides.

    Importing Alembic costs more than the rest of start-up's database work, and on every start
    but the first the schema is already at head (tests/test_db_head.py checks this against
    Alembic's own answer).
    """
    folder = versions or Path(migrations_path()) / "versions"
    revisions: set[str] = set()
    parents: set[str] = set()
    try:
        files = [f for f in folder.iterdir() if f.suffix == ".py" and f.name[0] != "_"]
        for file in files:
            found = dict((m[1], m[2]) for m in _REVISION_LINE.finditer(file.read_text("utf-8")))
            names = _QUOTED.findall(found.get("revision", ""))
            if len(names) != 1:
                return None
            revisions.add(names[0])
            parents.update(_QUOTED.findall(found.get("down_revision", "")))
    except (OSError, UnicodeDecodeError):
        return None
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and len(revisions) == len(files) else None


async def _at_head(engine: AsyncEngine) -> bool:
    """True when alembic_version holds exactly the shipped head: one short read, no Alembic.

    A failure to connect is raised as the upgrade would raise it (so a server that is away is
    not tried twice); a failing read (no table yet) says False and leaves it to the upgrade.
    """
    head = head_revision()
    if head is None:
        return False
    async with engine.connect() as conn:
        conn = await conn.execution_options(**{SQLITE_BEGIN_OPTION: "DEFERRED"})
        try:
            result = await conn.execute(text("SELECT version_num FROM alembic_version"))
            rows = [tuple(row) for row in result.all()]
        except DBAPIError:
            return False
    return rows == [(head,)]


def _upgrade_sync(connection: Connection, revision: str) -> tuple[str | None, str | None]:
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    before = MigrationContext.configure(connection).get_current_revision()
    command.upgrade(alembic_config(connection), revision)
    return before, MigrationContext.configure(connection).get_current_revision()


# Alembic keeps its migration context in a module global, so two upgrades in one process must
# not interleave (they deadlock on each other's connections): one lock per event loop.
_local_upgrade_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate to head; idempotent, and on PostgreSQL serialised across replicas by a lock."""
    if revision == "head" and await _at_head(engine):
        return
    lock = _local_upgrade_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock, engine.begin() as conn:
        before, after = await conn.run_sync(_upgrade_sync, revision)
    if before != after:  # Alembic's own lines are SQL chatter, shown only with LOG_SQL
        log.info("database schema upgraded from %s to %s", before or "empty", after)


async def open_database(url: str) -> AsyncEngine:
    """The engine, migrated to head; DatabaseFileError when a SQLite file is not a database.

    bot.dbfile checks the header; a file that has it but is damaged only shows when SQLite
    reads it, during the upgrade.
    """
    engine = create_engine(url)
    try:
        await upgrade(engine)
    except DBAPIError as exc:
        await engine.dispose()
        damaged = isinstance(exc.orig, sqlite3.DatabaseError) and not isinstance(
            exc.orig, sqlite3.OperationalError
        )
        if not damaged:
            raise
        path = _sqlite_path(normalize_database_url(url))
        raise DatabaseFileError(
            f"DATABASE_URL names {path}, which is not a usable SQLite database: {exc.orig}."
            " Restore it from a backup or point DATABASE_URL at another file."
        ) from None
    except BaseException:
        await engine.dispose()
        raise
    path = _sqlite_path(normalize_database_url(url))
    if path is not None:
        warn_if_readable_by_others(path)
    return engine


def describe_operational_error(exc: OperationalError) -> str:
    """The driver's own complaint, first line only (it never holds a password)."""
    lines = str(exc.orig or exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
