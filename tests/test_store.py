"""The store against real databases: SQLite files, and PostgreSQL when the URL is given.

PostgreSQL runs use one throwaway database per module and one fresh schema per test, so tests
are isolated and migrations always start from empty.
"""

from __future__ import annotations

import asyncio
import io
import os
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

import bot.archive.records
import bot.followup_store  # noqa: F401 - its table is on `metadata`
from bot.db import create_engine, normalize_database_url, switch_to_wal, upgrade
from bot.models import EndReason, Export, ExportState, Subscription
from bot.slack_out import _CHANNEL_ERRORS, _TOKEN_ERRORS
from bot.store import (
    CreationOutcome,
    ExportRow,
    PollResult,
    RunOutcome,
    ScheduleRow,
    Store,
    WatchCapReached,
    WatchCaps,
    _subscription,
    metadata,
    subscriptions,
)

POSTGRES_URL_VAR = "ASANA_BOT_TEST_POSTGRES_URL"
#: The newest migration: every start-up brings the database here.
HEAD_REVISION = "0009"
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)
CANARY_URL = "https://exports.example.invalid/org.zip?X-Amz-Signature=canary-7d1f0b9e42"


def _admin_conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A uniquely named database for this module, dropped afterwards."""
    url = os.environ.get(POSTGRES_URL_VAR)
    if not url:
        pytest.skip(f"{POSTGRES_URL_VAR} is not set: no PostgreSQL server to test against")
    import psycopg

    name = f"asana_bot_store_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_admin_conninfo(url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_admin_conninfo(url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Backend:
    """How to reach one isolated, empty database; engine() makes as many as a test needs."""

    name: str
    url: str
    connect_args: dict[str, Any] = field(default_factory=dict)
    sqlite_path: Path | None = None
    _engines: list[AsyncEngine] = field(default_factory=list)

    def engine(self) -> AsyncEngine:
        engine = create_engine(self.url, connect_args=dict(self.connect_args))
        self._engines.append(engine)
        return engine

    async def dispose(self) -> None:
        for engine in self._engines:
            await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "nested" / "dir" / "bot.db"
        b = Backend("sqlite", f"sqlite:///{path}", sqlite_path=path)
        yield b
        await b.dispose()
        return
    base = request.getfixturevalue("pg_database")
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_admin_conninfo(base), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    b = Backend("postgresql", base, {"options": f"-c search_path={schema}"})
    yield b
    await b.dispose()  # the schema goes with the module's database (DROP ... WITH (FORCE))


@pytest.fixture
async def engine(backend: Backend) -> AsyncEngine:
    engine = backend.engine()
    await upgrade(engine)
    return engine


@pytest.fixture
def store(engine: AsyncEngine) -> Iterator[Store]:
    store = Store(engine)
    yield store
    store.close()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema revision the database is at (None when never migrated)."""

    def read(connection: sa.Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(read)


async def _upsert(
    store: Store, export: Export, *, now: datetime, next_poll_at: datetime | None
) -> None:
    """Write a fetched export as `Store.subscribe` does, without a subscription."""
    await store.write(
        lambda conn: Store._upsert_export(conn, export, now=now, next_poll_at=next_poll_at)
    )


async def _get_subscription(store: Store, sub_id: int) -> Subscription | None:
    async with store.engine.connect() as conn:
        query = subscriptions.select().where(subscriptions.c.id == sub_id)
        row = (await conn.execute(query)).first()
    return _subscription(row._mapping) if row else None


def _export(gid: str = "1001", state: ExportState = ExportState.PENDING, **kw: Any) -> Export:
    kw.setdefault("organization_gid", "42")
    kw.setdefault("organization_name", "Acme")
    kw.setdefault("raw_state", state.value)
    return Export(gid=gid, state=state, **kw)


async def _watch(
    store: Store,
    gid: str,
    *,
    due: datetime = T0,
    state: ExportState = ExportState.PENDING,
    channel: str = "C1",
) -> int:
    sub, _ = await store.subscribe(
        team_id="T1",
        channel_id=channel,
        user_id="U1",
        export=_export(gid, state),
        now=T0 - timedelta(minutes=5),
        next_poll_at=due,
    )
    return sub.id


# -- URLs and engines ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///data/bot.db", "sqlite+aiosqlite:///data/bot.db"),
        ("sqlite:////abs/bot.db", "sqlite+aiosqlite:////abs/bot.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_normalize_database_url(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected


@pytest.mark.parametrize(
    "given", ["mysql://root:hunter2secret@db/x", "data/bot.db", "postgresql+psycopg2://u@h/d"]
)
def test_unsupported_urls_are_refused_without_echoing_passwords(given: str) -> None:
    with pytest.raises(ValueError) as caught:
        normalize_database_url(given)
    assert "hunter2secret" not in str(caught.value)
    assert "sqlite:///" in str(caught.value)


async def test_sqlite_engine_pragmas_and_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "bot.db"
    engine = create_engine(f"sqlite:///{path}")
    try:
        async with engine.connect() as conn:
            pragmas = {
                name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
                for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
            }
        assert pragmas == {
            "journal_mode": "wal",
            "busy_timeout": 5000,
            "foreign_keys": 1,
            "synchronous": 1,
        }
        assert path.exists()
    finally:
        await engine.dispose()


def _journal_mode(path: Path) -> str:
    with closing(sqlite3.connect(path)) as db:
        return str(db.execute("PRAGMA journal_mode").fetchone()[0])


def test_switching_a_new_file_to_wal_waits_out_another_writer(tmp_path: Path) -> None:
    """SQLite refuses the switch at once, busy handler or not, while another connection holds
    the write lock: engines starting together on a new file saw 'database is locked'."""
    path = tmp_path / "bot.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as writer:
        writer.execute("CREATE TABLE t (x)")
        writer.execute("BEGIN IMMEDIATE")
        naps: list[float] = []

        def nap(seconds: float) -> None:
            naps.append(seconds)
            if len(naps) == 2:
                writer.execute("COMMIT")

        switch_to_wal(path, sleep=nap)
    assert len(naps) == 2 and naps[1] > naps[0]
    assert _journal_mode(path) == "wal"


def test_switching_to_wal_gives_up_after_its_patience_and_leaves_it_to_the_pool(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bot.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as writer:
        writer.execute("CREATE TABLE t (x)")
        writer.execute("BEGIN IMMEDIATE")
        switch_to_wal(path, patience=0, sleep=lambda _: pytest.fail("slept past its patience"))
        writer.execute("COMMIT")
    assert _journal_mode(path) == "delete"


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_postgresql_engine_survives_dropped_connections(backend: Backend) -> None:
    engine = backend.engine()
    await upgrade(engine)
    store = Store(engine)
    await _watch(store, "1")
    # Kill every pooled connection server-side, as a server restart would.
    import psycopg

    with psycopg.connect(_admin_conninfo(backend.url), autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert killed is not None and killed[0] >= 1
    assert await store.count_active_subscriptions() == 1


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_sqlite_write_transactions_take_the_lock_at_begin(backend: Backend) -> None:
    """BEGIN IMMEDIATE: a transaction that reads first cannot be overtaken before it writes."""
    first, second = backend.engine(), backend.engine()
    await upgrade(first)
    async with first.begin() as conn:
        await conn.execute(sa.text("SELECT count(*) FROM exports"))
        writer = asyncio.create_task(_upsert(Store(second), _export("w"), now=T0, next_poll_at=T0))
        await asyncio.sleep(0.3)
        assert not writer.done()
    await writer
    assert await Store(first).get_export_row("w") is not None


# -- migrations and schema -------------------------------------------------------------------


async def test_migrations_from_empty_and_idempotent(backend: Backend) -> None:
    engine = backend.engine()
    assert await current_revision(engine) is None
    await upgrade(engine)
    assert await current_revision(engine) == HEAD_REVISION
    await upgrade(engine)  # every start-up runs it again
    assert await current_revision(engine) == HEAD_REVISION

    def tables(conn: sa.Connection) -> set[str]:
        return set(sa.inspect(conn).get_table_names())

    async with engine.connect() as conn:
        assert {"exports", "subscriptions", "alembic_version"} <= await conn.run_sync(tables)


async def test_concurrent_upgrades_in_one_process(backend: Backend) -> None:
    engines = [backend.engine() for _ in range(3)]
    await asyncio.gather(*(upgrade(e) for e in engines))
    assert [await current_revision(e) for e in engines] == [HEAD_REVISION] * 3


_UPGRADE_SCRIPT = """
import asyncio, sys
from bot.db import create_engine, upgrade

async def main():
    engine = create_engine(sys.argv[1])
    try:
        async with engine.connect():
            pass  # connected and warm: now wait for the others
        print("ready", flush=True)
        sys.stdin.readline()
        await upgrade(engine)
    finally:
        await engine.dispose()

asyncio.run(main())
"""


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_concurrent_upgrades_from_several_replicas(backend: Backend) -> None:
    """Separate processes, as replicas are, released together: the database serialises them."""
    env = {**os.environ, "PGOPTIONS": backend.connect_args["options"]}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _UPGRADE_SCRIPT,
            backend.url,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
    outcomes = await asyncio.gather(*(p.communicate(b"go\n") for p in procs))
    assert [p.returncode for p in procs] == [0] * 3, [err.decode()[-500:] for _, err in outcomes]
    assert await current_revision(backend.engine()) == HEAD_REVISION


def test_alembic_runs_on_its_own_for_operators(tmp_path: Path) -> None:
    """Without bot.db.upgrade: offline SQL for a DBA, and online with a URL (env.py fallback)."""
    from alembic import command

    from bot.db import alembic_config

    offline = alembic_config()
    offline.set_main_option("sqlalchemy.url", "postgresql://dba@db.invalid/bot")
    offline.output_buffer = io.StringIO()
    command.upgrade(offline, "head", sql=True)
    sql = offline.output_buffer.getvalue()
    assert "CREATE TABLE exports" in sql and "WHERE ended_at IS NULL" in sql
    assert "url" not in sql.lower()

    online = alembic_config()
    online.set_main_option("sqlalchemy.url", f"sqlite:///{tmp_path / 'ops.db'}")
    command.upgrade(online, "head")
    with closing(sqlite3.connect(tmp_path / "ops.db")) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (HEAD_REVISION,)
        ]


async def test_migration_matches_the_store_tables(engine: AsyncEngine) -> None:
    def diff(conn: sa.Connection) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, metadata)

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_migration_0003_names_the_gone_exports(backend: Backend) -> None:
    """Rows that said "gone" as not_found with no next poll now say state = 'gone'."""
    engine = backend.engine()
    await upgrade(engine, "0002")
    rows = [
        # gid, state, last_error, next_poll_at: only the first is gone
        ("gone", "started", "not_found", None),
        ("due", "started", "not_found", T0),
        ("failing", "pending", "timeout", None),
        ("finished", "finished", "not_found", None),
        ("failed", "error", "not_found", None),
    ]
    async with engine.begin() as conn:
        for gid, state, error, due in rows:
            await conn.execute(
                sa.text(
                    "INSERT INTO exports (gid, state, last_error, next_poll_at, poll_count,"
                    " consecutive_failures, updated_at) VALUES (:g, :s, :e, :d, 1, 0, :u)"
                ),
                {"g": gid, "s": state, "e": error, "d": due, "u": T0},
            )
    await upgrade(engine)
    store = Store(engine)
    states = {gid: (await store.get_export_row(gid)).state for gid, *_ in rows}  # type: ignore[union-attr]
    assert states == {
        "gone": ExportState.GONE,
        "due": ExportState.STARTED,
        "failing": ExportState.PENDING,
        "finished": ExportState.FINISHED,
        "failed": ExportState.ERROR,
    }


async def test_a_gone_export_is_stored_as_gone_and_owed_a_notification(store: Store) -> None:
    sub_id = await _watch(store, "g")
    await store.claim_due(owner="w", now=T0, lease=LEASE, limit=5)
    gone = PollResult(next_poll_at=None, error="not_found", state=ExportState.GONE)
    assert await store.record_poll("g", owner="w", now=T0, result=gone)
    row = await store.get_export_row("g")
    assert row is not None and (row.state, row.last_error) == (ExportState.GONE, "not_found")
    assert [s.id for s in await store.untold_subscriptions()] == [sub_id]
    assert await store.claim_due(owner="w", now=T0 + LEASE * 2, lease=LEASE, limit=5) == []
    assert ExportState.parse("gone") is ExportState.UNKNOWN  # Asana cannot say it


def test_every_slack_failure_that_ends_a_watch_has_an_end_reason() -> None:
    for error in _CHANNEL_ERRORS | _TOKEN_ERRORS:
        assert EndReason.slack(error) == f"slack_{error}"
    assert {r.value for r in EndReason if r.value.startswith("slack_")} == {
        f"slack_{e}" for e in _CHANNEL_ERRORS | _TOKEN_ERRORS
    }


async def test_active_subscription_index_is_partial_and_unique(engine: AsyncEngine) -> None:
    def indexes(conn: sa.Connection) -> list[dict[str, Any]]:
        return sa.inspect(conn).get_indexes("subscriptions")

    async with engine.connect() as conn:
        found = {i["name"]: i for i in await conn.run_sync(indexes)}
    active = found["uq_subscriptions_active"]
    assert active["unique"]
    assert active["column_names"] == ["team_id", "channel_id", "export_gid"]
    where = active.get("dialect_options", {})
    assert any("ended_at IS NULL" in str(v) for v in where.values()), where


async def test_no_column_could_hold_a_url(engine: AsyncEngine) -> None:
    def columns(conn: sa.Connection) -> list[str]:
        inspector = sa.inspect(conn)
        return [
            f"{table}.{col['name']}"
            for table in inspector.get_table_names()
            for col in inspector.get_columns(table)
        ]

    async with engine.connect() as conn:
        names = await conn.run_sync(columns)
    assert "exports.gid" in names
    assert [n for n in names if "url" in n.lower() or "link" in n.lower()] == []


async def test_download_url_canary_is_never_stored(backend: Backend, store: Store) -> None:
    export = Export(
        gid="555",
        state=ExportState.STARTED,
        raw_state="started",
        organization_gid="42",
        organization_name="Org-canary-name",
        created_at=T0,
        download_url=CANARY_URL,
    )
    await _upsert(store, export, now=T0, next_poll_at=T0)
    sub, _ = await store.subscribe(
        team_id="T1", channel_id="C1", user_id="U1", export=export, now=T0, next_poll_at=T0
    )
    [row] = await store.claim_due(owner="w1", now=T0, lease=LEASE, limit=5)
    finished = Export(gid=row.gid, state=ExportState.FINISHED, raw_state="finished")
    assert await store.record_poll(
        row.gid, owner="w1", now=T0, result=PollResult(next_poll_at=None, export=finished)
    )
    assert await store.try_mark_notified(sub.id, now=T0)
    await store.record_notified(sub.id, "1700000000.000100", now=T0, reason="finished")

    def dump(conn: sa.Connection) -> str:
        out = []
        for table in sa.inspect(conn).get_table_names():
            rows = conn.execute(sa.select(sa.text("*")).select_from(sa.table(table)))
            out.extend(repr(tuple(r)) for r in rows)
        return "\n".join(out)

    async with store.engine.connect() as conn:
        text = await conn.run_sync(dump)
    assert "Org-canary-name" in text  # the dump really does contain what was written
    assert "1700000000.000100" in text
    assert "canary-7d1f0b9e42" not in text
    assert "exports.example.invalid" not in text
    if backend.sqlite_path is not None:
        await store.engine.dispose()
        for path in backend.sqlite_path.parent.iterdir():
            assert b"canary-7d1f0b9e42" not in path.read_bytes(), path


# -- time ------------------------------------------------------------------------------------


async def test_aware_datetimes_round_trip_as_utc(store: Store) -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    created = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=india)
    due = datetime(2025, 1, 2, 9, 0, 0, 1, tzinfo=timezone(timedelta(hours=-7)))
    await _upsert(store, _export("9", created_at=created), now=T0, next_poll_at=due)
    row = await store.get_export_row("9")
    assert row is not None
    assert row.created_at == created
    assert row.created_at.tzinfo is UTC
    assert row.created_at.microsecond == 678901
    assert row.next_poll_at == due and row.next_poll_at.tzinfo is UTC
    assert row.updated_at == T0 and row.updated_at.tzinfo is UTC


async def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(StatementError, match="naive"):
        await _upsert(store, _export("9"), now=datetime(2025, 1, 1), next_poll_at=None)


async def test_ordering_across_offsets_uses_the_instant(store: Store) -> None:
    early_in_tokyo = datetime(2025, 3, 1, 20, 0, tzinfo=timezone(timedelta(hours=9)))  # 11:00Z
    late_in_utc = datetime(2025, 3, 1, 11, 30, tzinfo=UTC)
    await _watch(store, "late", due=late_in_utc)
    await _watch(store, "early", due=early_in_tokyo)
    rows = await store.claim_due(owner="w", now=T0, lease=LEASE, limit=10)
    assert [r.gid for r in rows] == ["early", "late"]
    none_due = await store.claim_due(
        owner="w",
        now=datetime(2025, 3, 1, 19, 59, tzinfo=timezone(timedelta(hours=9))),
        lease=LEASE,
        limit=10,
    )
    assert none_due == []


# -- exports ---------------------------------------------------------------------------------


async def test_upsert_updates_state_keeps_known_fields_and_schedule(store: Store) -> None:
    await _upsert(store, _export("7", created_at=T0), now=T0, next_poll_at=T0)
    later = T0 + timedelta(minutes=1)
    await _upsert(
        store,
        Export(gid="7", state=ExportState.STARTED, raw_state="started"),
        now=later,
        next_poll_at=None,
    )
    row = await store.get_export_row("7")
    assert row is not None
    assert row.state is ExportState.STARTED
    assert (row.organization_gid, row.organization_name, row.created_at) == ("42", "Acme", T0)
    assert row.next_poll_at == T0  # None keeps the stored schedule
    assert row.updated_at == later
    assert row.to_export() == Export(
        gid="7",
        state=ExportState.STARTED,
        raw_state="started",
        organization_gid="42",
        organization_name="Acme",
        created_at=T0,
    )
    assert await store.get_export_row("nope") is None


async def test_unknown_stored_state_reads_back_as_unknown(store: Store) -> None:
    await _upsert(
        store,
        Export(gid="8", state=ExportState.UNKNOWN, raw_state="x" * 300),
        now=T0,
        next_poll_at=T0,
    )
    row = await store.get_export_row("8")
    assert row is not None and row.state is ExportState.UNKNOWN
    assert row.raw_state is not None and len(row.raw_state) == 64


# -- subscriptions ---------------------------------------------------------------------------


async def test_subscribe_dedupes_per_channel(store: Store) -> None:
    kw: dict[str, Any] = {"team_id": "T1", "user_id": "U1", "now": T0, "next_poll_at": T0}
    first, created = await store.subscribe(channel_id="C1", export=_export("1"), **kw)
    again, created_again = await store.subscribe(channel_id="C1", export=_export("1"), **kw)
    other, created_other = await store.subscribe(channel_id="C2", export=_export("1"), **kw)
    assert (created, created_again, created_other) == (True, False, True)
    assert again.id == first.id
    assert other.id != first.id
    assert first.created_at == T0 and first.ended_at is None
    assert [s.id for s in await store.active_subscriptions("1")] == [first.id, other.id]
    assert await store.count_active_subscriptions() == 2


async def test_concurrent_subscribes_create_one_row(backend: Backend, store: Store) -> None:
    other = Store(backend.engine())

    async def one(i: int) -> tuple[int, bool]:
        s = store if i % 2 else other
        sub, created = await s.subscribe(
            team_id="T1",
            channel_id="C1",
            user_id=f"U{i}",
            export=_export("77"),
            now=T0,
            next_poll_at=T0,
        )
        return sub.id, created

    results = await asyncio.gather(*(one(i) for i in range(12)))
    assert sum(created for _, created in results) == 1
    assert len({sub_id for sub_id, _ in results}) == 1
    assert await store.count_active_subscriptions() == 1


async def test_subscribe_that_loses_a_race_returns_the_winner(
    backend: Backend, store: Store
) -> None:
    await _upsert(store, _export("r"), now=T0, next_poll_at=T0)
    rival = backend.engine()
    async with rival.begin() as conn:
        result = await conn.execute(
            subscriptions.insert()
            .values(export_gid="r", team_id="T1", channel_id="C1", user_id="U9", created_at=T0)
            .returning(subscriptions.c.id)
        )
        rival_id = result.scalar_one()
        attempt = asyncio.create_task(
            store.subscribe(
                team_id="T1",
                channel_id="C1",
                user_id="U1",
                export=_export("r"),
                now=T0,
                next_poll_at=T0,
            )
        )
        await asyncio.sleep(0.3)
        assert not attempt.done()  # waiting on the rival's uncommitted row (or SQLite's lock)
    sub, created = await attempt
    assert (sub.id, sub.user_id, created) == (rival_id, "U9", False)


async def test_database_enforces_one_active_subscription(store: Store) -> None:
    sub_id = await _watch(store, "5")
    row = {"export_gid": "5", "team_id": "T1", "channel_id": "C1", "user_id": "U2"}
    async with store.engine.begin() as conn:
        # Ended duplicates are fine: history is kept.
        await conn.execute(subscriptions.insert().values(**row, created_at=T0, ended_at=T0))
    with pytest.raises(IntegrityError):
        async with store.engine.begin() as conn:
            await conn.execute(subscriptions.insert().values(**row, created_at=T0))
    with pytest.raises(IntegrityError):  # foreign key: no subscription without its export
        async with store.engine.begin() as conn:
            await conn.execute(
                subscriptions.insert().values(**{**row, "export_gid": "404"}, created_at=T0)
            )
    assert [s.id for s in await store.active_subscriptions("5")] == [sub_id]


async def test_unwatch_then_resubscribe(store: Store) -> None:
    first = await _watch(store, "3")
    later = T0 + timedelta(hours=1)
    ended = await store.unwatch(team_id="T1", channel_id="C1", gid="3", now=later)
    assert ended is not None and ended.id == first
    assert (ended.ended_at, ended.end_reason) == (later, "unwatched")
    assert await store.unwatch(team_id="T1", channel_id="C1", gid="3", now=later) is None
    assert await store.active_subscriptions("3") == []
    second = await _watch(store, "3")
    assert second != first
    assert [s.id for s in await store.active_subscriptions("3")] == [second]
    old = await _get_subscription(store, first)
    assert old is not None and old.ended_at == later


async def test_watch_caps_refuse_new_watches_only(store: Store) -> None:
    caps = WatchCaps(per_user=2, per_channel=3)

    async def watch(gid: str, channel: str, user: str) -> bool:
        _, created = await store.subscribe(
            team_id="T1",
            channel_id=channel,
            user_id=user,
            export=_export(gid),
            now=T0,
            next_poll_at=T0,
            caps=caps,
        )
        return created

    assert await watch("1", "C1", "UA") and await watch("2", "C2", "UA")
    with pytest.raises(WatchCapReached) as user_full:
        await watch("3", "C1", "UA")
    assert (user_full.value.scope, user_full.value.cap) == ("user", 2)
    assert not await watch("1", "C1", "UA"), "asking again for a watched export is no new watch"
    assert await watch("3", "C1", "UB") and await watch("4", "C1", "UC")
    with pytest.raises(WatchCapReached) as channel_full:
        await watch("5", "C1", "UD")
    assert (channel_full.value.scope, channel_full.value.cap) == ("channel", 3)
    assert await watch("5", "C9", "UD"), "other channels have room"
    await store.unwatch(team_id="T1", channel_id="C1", gid="1", now=T0)
    assert await watch("6", "C1", "UA"), "an ended watch frees room for its person and channel"
    assert await store.count_watchers("1") == 0


async def test_count_watchers_counts_active_channels(store: Store) -> None:
    assert await store.count_watchers("7") == 0
    for channel in ("C1", "C2", "C3"):
        await _watch(store, "7", channel=channel)
    await store.unwatch(team_id="T1", channel_id="C2", gid="7", now=T0)
    assert await store.count_watchers("7") == 2


async def test_active_watch_counts_use_partial_indexes(backend: Backend, store: Store) -> None:
    """The counts on the command path read an index, never the table's ended rows."""
    if backend.name != "sqlite":
        pytest.skip("the plan is checked on SQLite; PostgreSQL picks by statistics")
    queries = [
        ("ix_subscriptions_active_user", "team_id = 'T1' AND user_id = 'U1'"),
        ("ix_subscriptions_active_export", "export_gid = '7'"),
        # A channel's, whichever workspace started them (Enterprise Grid): the cap's count and
        # "does this channel watch it", never a walk through a popular export's watchers.
        ("ix_subscriptions_active_channel", "channel_id = 'C1'"),
        ("ix_subscriptions_active_channel", "channel_id = 'C1' AND export_gid = '7'"),
    ]
    async with store.engine.connect() as conn:
        for index, where in queries:
            sql = f"EXPLAIN QUERY PLAN SELECT count(*) FROM subscriptions WHERE {where}"
            plan = " ".join(
                str(r) for r in await conn.exec_driver_sql(sql + " AND ended_at IS NULL")
            )
            assert f"COVERING INDEX {index}" in plan, plan


async def test_list_subscriptions_active_oldest_first(store: Store) -> None:
    kw: dict[str, Any] = {"team_id": "T1", "user_id": "U1", "next_poll_at": T0}
    b, _ = await store.subscribe(
        channel_id="C2", export=_export("b"), now=T0 + timedelta(seconds=2), **kw
    )
    a, _ = await store.subscribe(channel_id="C1", export=_export("a"), now=T0, **kw)
    c, _ = await store.subscribe(
        channel_id="C1", export=_export("c"), now=T0 + timedelta(seconds=5), **kw
    )
    await store.subscribe(
        channel_id="C9", export=_export("z"), now=T0, **{**kw, "team_id": "OTHER"}
    )
    await store.end_subscription(c.id, now=T0, reason="finished")
    everything = await store.list_subscriptions(team_id="T1")
    assert [(s.id, r.gid) for s, r in everything] == [(a.id, "a"), (b.id, "b")]
    assert all(isinstance(r, ExportRow) and r.organization_name == "Acme" for _, r in everything)
    in_c1 = await store.list_subscriptions(team_id="T1", channel_id="C1")
    assert [s.id for s, _ in in_c1] == [a.id]


async def test_a_channel_shared_by_two_workspaces_has_one_watch(store: Store) -> None:
    """Enterprise Grid: one channel id is one conversation in every workspace sharing it."""
    kw: dict[str, Any] = {"channel_id": "CSHARED", "next_poll_at": T0, "now": T0}
    first, created = await store.subscribe(team_id="TA", user_id="UA", export=_export("s"), **kw)
    again, created_again = await store.subscribe(
        team_id="TB", user_id="UB", export=_export("s"), **kw
    )
    assert created and not created_again and again.id == first.id and again.team_id == "TA"
    # The channel's list is the same from both workspaces; each workspace's list has its own.
    for team in ("TA", "TB"):
        shown = await store.list_subscriptions(team_id=team, channel_id="CSHARED")
        assert [s.id for s, _ in shown] == [first.id]
    assert [s.id for s, _ in await store.list_subscriptions(team_id="TA")] == [first.id]
    assert await store.list_subscriptions(team_id="TB") == []
    # Either workspace's members may end it, as any member of the channel may.
    ended = await store.unwatch(team_id="TB", channel_id="CSHARED", gid="s", now=T0)
    assert ended is not None and ended.id == first.id
    assert await store.unwatch(team_id="TA", channel_id="CSHARED", gid="s", now=T0) is None


async def test_card_ts_and_end(store: Store) -> None:
    one = await _watch(store, "6", channel="C1")
    two = await _watch(store, "6", channel="C2")
    await store.set_card_ts(one, "111.222")
    got = await _get_subscription(store, one)
    assert got is not None and got.card_ts == "111.222"
    assert await store.end_subscription(one, now=T0, reason="channel_not_found")
    assert not await store.end_subscription(one, now=T0, reason="again")
    assert await store.end_subscription(two, now=T0, reason="error")
    second = await _get_subscription(store, two)
    assert second is not None and second.end_reason == "error"
    first = await _get_subscription(store, one)
    assert first is not None and first.end_reason == "channel_not_found"
    assert await store.count_active_subscriptions() == 0


# -- claiming --------------------------------------------------------------------------------


async def test_claim_respects_due_time_order_and_limit(store: Store) -> None:
    for i, minutes in enumerate([-3, -1, -2, 0, 5]):
        await _watch(store, f"g{i}", due=T0 + timedelta(minutes=minutes))
    assert await store.due_count(T0) == 4
    first = await store.claim_due(owner="w1", now=T0, lease=LEASE, limit=2)
    assert [r.gid for r in first] == ["g0", "g2"]
    assert all(r.lease_owner == "w1" and r.lease_until == T0 + LEASE for r in first)
    rest = await store.claim_due(owner="w1", now=T0, lease=LEASE, limit=10)
    assert [r.gid for r in rest] == ["g1", "g3"]  # due exactly now counts
    assert await store.claim_due(owner="w1", now=T0, lease=LEASE, limit=10) == []
    assert await store.due_count(T0) == 0
    stored = await store.get_export_row("g0")
    assert stored is not None and stored.lease_owner == "w1"
    assert await store.claim_due(owner="w1", now=T0, lease=LEASE, limit=0) == []


async def test_leases_block_until_expired(store: Store) -> None:
    await _watch(store, "L")
    [row] = await store.claim_due(owner="a", now=T0, lease=LEASE, limit=5)
    assert await store.claim_due(owner="b", now=T0 + LEASE, lease=LEASE, limit=5) == []
    later = T0 + LEASE + timedelta(microseconds=1)
    [again] = await store.claim_due(owner="b", now=later, lease=LEASE, limit=5)
    assert again.gid == row.gid and again.lease_owner == "b"
    assert again.lease_until == later + LEASE


async def test_only_watchable_exports_are_claimed(store: Store) -> None:
    await _watch(store, "pending", state=ExportState.PENDING)
    await _watch(store, "started", state=ExportState.STARTED)
    await _watch(store, "unknown", state=ExportState.UNKNOWN)
    await _watch(store, "finished", state=ExportState.FINISHED)
    await _watch(store, "error", state=ExportState.ERROR)
    await _watch(store, "unwatched")
    await store.unwatch(team_id="T1", channel_id="C1", gid="unwatched", now=T0)
    await _upsert(store, _export("nobody"), now=T0, next_poll_at=T0)
    await _watch(store, "unscheduled")
    async with store.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE exports SET next_poll_at = NULL WHERE gid = 'unscheduled'")
        )
    rows = await store.claim_due(owner="w", now=T0, lease=LEASE, limit=50)
    assert sorted(r.gid for r in rows) == ["pending", "started", "unknown"]


async def test_paused_exports_are_still_claimed(store: Store) -> None:
    await _watch(store, "p")
    assert len(await store.claim_due(owner="w", now=T0, lease=LEASE, limit=5)) == 1
    later = T0 + timedelta(minutes=10)
    failed = PollResult(
        next_poll_at=later, error="401 from Asana", paused_reason="token rejected (401)"
    )
    assert await store.record_poll("p", owner="w", now=T0, result=failed)
    [again] = await store.claim_due(owner="w", now=later, lease=LEASE, limit=5)
    assert again.paused_reason == "token rejected (401)"
    assert again.state is ExportState.PENDING  # a failed poll keeps the known state
    # A later successful interactive lookup proves the token works again.
    await _upsert(store, _export("p", ExportState.STARTED), now=later, next_poll_at=None)
    row = await store.get_export_row("p")
    assert row is not None and row.paused_reason is None and row.state is ExportState.STARTED


async def test_concurrent_claimers_never_share_a_gid(backend: Backend, store: Store) -> None:
    for i in range(120):
        await _watch(store, f"{i:04d}", due=T0 - timedelta(seconds=i % 17))
    claimers = {"alpha": Store(backend.engine()), "beta": Store(backend.engine())}
    got: dict[str, list[str]] = {name: [] for name in claimers}

    async def claim(name: str, s: Store) -> bool:
        rows = await s.claim_due(owner=name, now=T0, lease=LEASE, limit=7)
        got[name].extend(r.gid for r in rows)
        return bool(rows)

    # Rounds in which both claim at once: left to drain freely, one SQLite writer could take
    # every row before the other's busy handler woke (seen on a loaded machine).
    while any(await asyncio.gather(*(claim(n, s) for n, s in claimers.items()))):
        pass
    alpha, beta = set(got["alpha"]), set(got["beta"])
    assert len(got["alpha"]) == len(alpha) and len(got["beta"]) == len(beta)
    assert alpha.isdisjoint(beta)
    assert alpha | beta == {f"{i:04d}" for i in range(120)}
    assert alpha and beta, "both claimers should have found work"
    for name, gids in got.items():
        for gid in gids[:10]:
            row = await store.get_export_row(gid)
            assert row is not None and row.lease_owner == name


# -- recording polls -------------------------------------------------------------------------


async def test_record_poll_writes_result_and_releases(store: Store) -> None:
    await _watch(store, "r")
    await store.claim_due(owner="w", now=T0, lease=LEASE, limit=5)
    created = T0 - timedelta(days=1)
    nxt = T0 + timedelta(seconds=30)
    started = Export(
        gid="r",
        state=ExportState.STARTED,
        raw_state="started",
        organization_gid="43",
        organization_name="Acme Two",
        created_at=created,
    )
    assert await store.record_poll(
        "r", owner="w", now=T0, result=PollResult(next_poll_at=nxt, export=started)
    )
    row = await store.get_export_row("r")
    assert row is not None
    assert (row.state, row.raw_state, row.organization_name) == (
        ExportState.STARTED,
        "started",
        "Acme Two",
    )
    assert (row.poll_count, row.consecutive_failures) == (1, 0)
    assert (row.lease_owner, row.lease_until) == (None, None)
    assert (row.next_poll_at, row.last_checked_at, row.created_at) == (nxt, T0, created)


async def test_record_poll_counts_failures_and_truncates_errors(store: Store) -> None:
    await _watch(store, "f")
    failures = []
    for i in range(3):
        now = T0 + timedelta(minutes=i)
        await store.claim_due(owner="w", now=now, lease=LEASE, limit=5)
        failed = PollResult(next_poll_at=now, error="E" * 2000)
        assert await store.record_poll("f", owner="w", now=now, result=failed)
        row = await store.get_export_row("f")
        assert row is not None
        failures.append(row.consecutive_failures)
    assert failures == [1, 2, 3]
    assert row.last_error is not None and len(row.last_error) == 500
    assert row.state is ExportState.PENDING and row.organization_name == "Acme"
    await store.claim_due(owner="w", now=T0 + timedelta(hours=1), lease=LEASE, limit=5)
    started = Export(gid="f", state=ExportState.STARTED, raw_state="started")
    assert await store.record_poll(
        "f", owner="w", now=T0, result=PollResult(next_poll_at=T0, export=started)
    )
    row = await store.get_export_row("f")
    assert row is not None
    assert (row.consecutive_failures, row.last_error, row.poll_count) == (0, None, 4)


async def test_record_poll_with_a_lost_lease_changes_nothing(store: Store) -> None:
    await _watch(store, "x")
    await store.claim_due(owner="slow", now=T0, lease=LEASE, limit=5)
    later = T0 + LEASE + timedelta(seconds=1)
    await store.claim_due(owner="fast", now=later, lease=LEASE, limit=5)

    def answered(state: ExportState) -> PollResult:
        export = Export(gid="x", state=state, raw_state="finished")
        return PollResult(next_poll_at=None, export=export)

    lost = await store.record_poll(
        "x", owner="slow", now=later, result=answered(ExportState.FINISHED)
    )
    assert lost is False
    row = await store.get_export_row("x")
    assert row is not None
    assert (row.state, row.poll_count, row.lease_owner) == (ExportState.PENDING, 0, "fast")
    assert not await store.release("x", owner="slow", next_poll_at=None)
    assert await store.record_poll(
        "x", owner="fast", now=later, result=answered(ExportState.STARTED)
    )
    row = await store.get_export_row("x")
    assert row is not None and (row.state, row.poll_count) == (ExportState.STARTED, 1)


async def test_release_defers_without_counting_a_poll(store: Store) -> None:
    await _watch(store, "d")
    await store.claim_due(owner="w", now=T0, lease=LEASE, limit=5)
    later = T0 + timedelta(seconds=20)
    assert await store.release("d", owner="w", next_poll_at=later)
    row = await store.get_export_row("d")
    assert row is not None
    assert (row.poll_count, row.lease_owner, row.next_poll_at) == (0, None, later)
    assert await store.claim_due(owner="w", now=T0, lease=LEASE, limit=5) == []
    assert [r.gid for r in await store.claim_due(owner="w", now=later, lease=LEASE, limit=5)] == [
        "d"
    ]


# -- exactly-once notification ---------------------------------------------------------------


async def test_mark_notified_has_exactly_one_winner(backend: Backend, store: Store) -> None:
    sub_id = await _watch(store, "n")
    stores = [store, Store(backend.engine())]
    results = await asyncio.gather(
        *(stores[i % 2].try_mark_notified(sub_id, now=T0) for i in range(16))
    )
    assert sum(results) == 1
    sub = await _get_subscription(store, sub_id)
    assert sub is not None and sub.notified_at == T0


async def test_notification_recovery_cycle(store: Store) -> None:
    a = await _watch(store, "n", channel="C1")
    b = await _watch(store, "n", channel="C2")
    c = await _watch(store, "n", channel="C3")
    assert await store.unrecorded_notifications() == []
    assert await store.try_mark_notified(a, now=T0)
    assert await store.try_mark_notified(b, now=T0 + timedelta(seconds=1))
    await store.end_subscription(c, now=T0, reason="unwatched")
    assert not await store.try_mark_notified(c, now=T0)  # an ended watch is not told
    assert [s.id for s in await store.unrecorded_notifications()] == [a, b]
    await store.record_notified(a, "123.456", now=T0, reason="finished")
    assert [s.id for s in await store.unrecorded_notifications()] == [b]
    assert not await store.clear_notified(a)  # recorded: stays notified
    assert await store.clear_notified(b)
    assert await store.unrecorded_notifications() == []
    assert await store.try_mark_notified(b, now=T0 + timedelta(minutes=1))
    assert not await store.try_mark_notified(b, now=T0 + timedelta(minutes=1))
    done = await _get_subscription(store, a)
    assert done is not None and done.notified_ts == "123.456"


# -- exports the bot creates -----------------------------------------------------------------


async def test_a_creation_request_is_claimed_once_whoever_races(store: Store) -> None:
    """The same request key from two replicas at once (a Slack retry): one claim wins."""
    fields = dict(team_id="T1", channel_id="C1", user_id="U1", organization_gid="42", now=T0)
    results = await asyncio.gather(
        *(store.claim_creation(request_key="k" * 64, **fields) for _ in range(5))
    )
    winners = [row for row, first in results if first]
    assert len(winners) == 1
    assert {row.id for row, _ in results} == {winners[0].id}
    assert winners[0].outcome is CreationOutcome.REQUESTED and winners[0].export_gid is None
    other, first = await store.claim_creation(request_key="other", **fields)
    assert first and other.id != winners[0].id


async def test_a_running_created_export_is_found_until_it_ends(store: Store) -> None:
    row, _ = await store.claim_creation(
        request_key="a", team_id="T1", channel_id="C1", user_id="U1", organization_gid="42", now=T0
    )
    assert await store.running_creation("42") is None  # not answered yet
    await store.record_creation(row.id, outcome=CreationOutcome.CREATED, now=T0, export_gid="9")
    assert await store.running_creation("42") is None  # nobody watches it: its state is stale
    await _watch(store, "9")
    found = await store.running_creation("42")
    assert found is not None and found[0].id == row.id and found[1].gid == "9"
    assert await store.running_creation("43") is None
    await _upsert(store, _export("9", ExportState.FINISHED), now=T0, next_poll_at=None)
    assert await store.running_creation("42") is None


# -- recurring exports (schedules) -----------------------------------------------------------


async def _add_schedule(store: Store, channel_id: str = "C1", team_id: str = "T1") -> ScheduleRow:
    return await store.add_schedule(
        team_id=team_id,
        channel_id=channel_id,
        organization_gid="42",
        trigger_text="weekly mon 02:00",
        timezone="Europe/Berlin",
        created_by="U1",
        now=T0,
    )


async def test_schedules_are_stored_listed_per_channel_and_ended_once(store: Store) -> None:
    a = await _add_schedule(store, "C1")
    b = await _add_schedule(store, "C2")
    other_team = await _add_schedule(store, "C1", team_id="T2")
    assert (a.trigger_text, a.timezone, a.created_by, a.created_at) == (
        "weekly mon 02:00",
        "Europe/Berlin",
        "U1",
        T0,
    )
    assert [s.id for s in await store.list_schedules("T1", "C1")] == [a.id]
    assert [s.id for s in await store.list_schedules("T1")] == [a.id, b.id]
    assert await store.end_schedule(a.id, now=T0, reason="removed by U1")
    assert not await store.end_schedule(a.id, now=T0, reason="again")
    ended = await store.schedule(a.id)
    assert ended is not None and (ended.ended_at, ended.end_reason) == (T0, "removed by U1")
    assert [s.id for s in await store.list_schedules("T1")] == [b.id]
    assert [s.id for s, _ in await store.active_schedules()] == [b.id, other_team.id]
    assert await store.schedule(999) is None


async def test_pausing_and_resuming_changes_once(store: Store) -> None:
    s = await _add_schedule(store)
    assert await store.set_schedule_paused(s.id, "Asana said 402")
    assert not await store.set_schedule_paused(s.id, "Asana said 403")  # already paused
    paused = await store.schedule(s.id)
    assert paused is not None and paused.paused_reason == "Asana said 402"
    assert await store.set_schedule_paused(s.id, None)
    assert not await store.set_schedule_paused(s.id, None)


async def test_one_occurrence_is_claimed_by_one_replica(backend: Backend, store: Store) -> None:
    """Three replicas (three engines) insert the same occurrence at once: one row, one winner."""
    s = await _add_schedule(store)
    occurrence = datetime(2025, 3, 3, 1, 0, tzinfo=UTC)
    replicas = [Store(backend.engine()) for _ in range(3)]
    won = await asyncio.gather(*(r.claim_run(s.id, occurrence, now=T0) for r in replicas))
    winners = [run for run in won if run is not None]
    assert len(winners) == 1
    assert winners[0].outcome is RunOutcome.CLAIMED and winners[0].attempts == 0
    assert [r.occurrence_at for r in await store.schedule_runs(s.id)] == [occurrence]
    ((_, latest),) = await store.active_schedules()
    assert latest == occurrence


async def test_an_attempt_is_marked_before_the_call_and_taken_once(store: Store) -> None:
    s = await _add_schedule(store)
    run = await store.claim_run(s.id, T0, now=T0)
    assert run is not None
    first = await store.start_run_attempt(run, now=T0)
    assert first is not None and (first.outcome, first.attempts) == (RunOutcome.ATTEMPTING, 1)
    assert await store.start_run_attempt(run, now=T0) is None  # stale view: someone went first
    later = T0 + timedelta(minutes=5)
    await store.record_run(run.id, outcome=RunOutcome.RETRYING, now=T0, next_attempt_at=later)
    assert await store.runs_to_resume(T0, stale_before=T0 - LEASE) == []
    (due,) = await store.runs_to_resume(later, stale_before=later - LEASE)
    assert (due.outcome, due.attempts) == (RunOutcome.RETRYING, 1)
    second = await store.start_run_attempt(due, now=later)
    assert second is not None and second.attempts == 2
    # An attempt whose replica died is found once it is older than the cut-off.
    assert await store.runs_to_resume(later, stale_before=later - LEASE) == []
    (stale,) = await store.runs_to_resume(later + LEASE, stale_before=later)
    assert stale.outcome is RunOutcome.ATTEMPTING
    # Declaring it unknown is a compare-and-set too: of two sweeping replicas, one tells.
    settled = await asyncio.gather(
        *(store.settle_run(stale, RunOutcome.UNKNOWN, now=later) for _ in range(3))
    )
    assert sorted(settled) == [False, False, True]
    await store.record_run(run.id, outcome=RunOutcome.CREATED, now=later, export_gid="77")
    (done,) = await store.schedule_runs(s.id)
    assert (done.outcome, done.export_gid) == (RunOutcome.CREATED, "77")
