"""Persistence for watched exports: the tables and the few queries (claim, compare-and-set).

Every method is its own short transaction and takes `now` from the caller, so tests control
time and several replicas agree on it through the database, not through local clocks.
Asana's download_url is never written: there is no column for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.expression import Executable

from bot.db import SQLITE_BEGIN_OPTION, sql_logged, thread_engine
from bot.models import EndReason, Export, ExportState, Subscription
from bot.sqlite_thread import Busy, Row, ThreadedSqlite, statement_rows

#: States still worth polling; UNKNOWN too, so a state Asana adds later does not strand a watch.
WATCHABLE_STATES: tuple[ExportState, ...] = (
    ExportState.PENDING,
    ExportState.STARTED,
    ExportState.UNKNOWN,
)

_ERROR_MAX = 500
_RAW_STATE_MAX = 64
_END_REASON_MAX = 200
_OWNER_MAX = 128
_TRIGGER_MAX = 200

T = TypeVar("T")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite (which keeps no offset) as on PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given to the store: pass timezone-aware values")
        value = value.astimezone(UTC)
        # SQLite compares the stored text, so every value must be naive UTC in one format.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = sa.MetaData()

exports = sa.Table(
    "exports",
    metadata,
    sa.Column("gid", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("raw_state", sa.String(_RAW_STATE_MAX)),
    sa.Column("organization_gid", sa.String(64)),
    sa.Column("organization_name", sa.Text()),
    sa.Column("created_at", UTCDateTime()),
    sa.Column("next_poll_at", UTCDateTime(), index=True),
    sa.Column("poll_count", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("lease_owner", sa.String(_OWNER_MAX)),
    sa.Column("lease_until", UTCDateTime()),
    sa.Column("last_checked_at", UTCDateTime()),
    sa.Column("last_error", sa.String(_ERROR_MAX)),
    sa.Column("paused_reason", sa.String(_ERROR_MAX)),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column(
        "export_gid",
        sa.String(64),
        sa.ForeignKey("exports.gid", name="fk_subscriptions_export_gid"),
        nullable=False,
        index=True,
    ),
    sa.Column("team_id", sa.String(64), nullable=False),
    sa.Column("channel_id", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("card_ts", sa.String(32)),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("notified_at", UTCDateTime()),
    sa.Column("notified_ts", sa.String(32)),
    sa.Column("ended_at", UTCDateTime()),
    sa.Column("end_reason", sa.String(_END_REASON_MAX)),
    # The schedule occurrence that started this export, for its card (null: a person asked).
    sa.Column(
        "schedule_run_id",
        sa.Integer(),
        sa.ForeignKey("schedule_runs.id", name="fk_subscriptions_schedule_run_id"),
    ),
    sa.Index(
        "uq_subscriptions_active",
        "team_id",
        "channel_id",
        "export_gid",
        unique=True,
        sqlite_where=sa.text("ended_at IS NULL"),
        postgresql_where=sa.text("ended_at IS NULL"),
    ),
    # Counting active watches per person (MAX_WATCHES_PER_USER) and per export (the card).
    sa.Index(
        "ix_subscriptions_active_user",
        "team_id",
        "user_id",
        "ended_at",
        sqlite_where=sa.text("ended_at IS NULL"),
        postgresql_where=sa.text("ended_at IS NULL"),
    ),
    sa.Index(
        "ix_subscriptions_active_export",
        "export_gid",
        "ended_at",
        sqlite_where=sa.text("ended_at IS NULL"),
        postgresql_where=sa.text("ended_at IS NULL"),
    ),
    # A channel's watches whichever workspace started them (Enterprise Grid): migration 0009.
    sa.Index(
        "ix_subscriptions_active_channel",
        "channel_id",
        "export_gid",
        "ended_at",
        sqlite_where=sa.text("ended_at IS NULL"),
        postgresql_where=sa.text("ended_at IS NULL"),
    ),
)


created_exports = sa.Table(
    "created_exports",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("request_key", sa.String(64), nullable=False),
    sa.Column("team_id", sa.String(64), nullable=False),
    sa.Column("channel_id", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("organization_gid", sa.String(64), nullable=False),
    sa.Column("export_gid", sa.String(64)),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("requested_at", UTCDateTime(), nullable=False),
    sa.Column("answered_at", UTCDateTime()),
    sa.UniqueConstraint("request_key", name="uq_created_exports_request_key"),
    sa.Index("ix_created_exports_organization", "organization_gid", "outcome"),
)


class CreationOutcome(enum.StrEnum):
    """Where a creation request stands (`created_exports.outcome`)."""

    REQUESTED = "requested"  # claimed; Asana is being (or was, by a replica that died) asked
    CREATED = "created"  # Asana answered with the new export (export_gid set)
    REFUSED = "refused"  # Asana (or fair use) said no: nothing was created
    UNKNOWN = "unknown"  # the request may have reached Asana, no answer: never repeated
    OFFERED = "offered"  # a running export of the organization was offered instead


@dataclass(frozen=True, slots=True)
class CreationRow:
    """One request to create an export, as `created_exports` keeps it."""

    id: int
    request_key: str
    team_id: str
    channel_id: str
    user_id: str
    organization_gid: str
    export_gid: str | None
    outcome: CreationOutcome
    requested_at: datetime
    answered_at: datetime | None


def _creation_row(m: Mapping[Any, Any]) -> CreationRow:
    c = created_exports.c
    return CreationRow(
        id=m[c.id],
        request_key=m[c.request_key],
        team_id=m[c.team_id],
        channel_id=m[c.channel_id],
        user_id=m[c.user_id],
        organization_gid=m[c.organization_gid],
        export_gid=m[c.export_gid],
        outcome=CreationOutcome(m[c.outcome]),
        requested_at=m[c.requested_at],
        answered_at=m[c.answered_at],
    )


schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("team_id", sa.String(64), nullable=False),
    sa.Column("channel_id", sa.String(64), nullable=False),
    sa.Column("organization_gid", sa.String(64), nullable=False),
    sa.Column("trigger_text", sa.String(_TRIGGER_MAX), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("paused_reason", sa.String(_ERROR_MAX)),
    sa.Column("ended_at", UTCDateTime()),
    sa.Column("end_reason", sa.String(_END_REASON_MAX)),
    sa.Index("ix_schedules_channel", "team_id", "channel_id"),
)

schedule_runs = sa.Table(
    "schedule_runs",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column(
        "schedule_id",
        sa.Integer(),
        sa.ForeignKey("schedules.id", name="fk_schedule_runs_schedule_id"),
        nullable=False,
    ),
    sa.Column("occurrence_at", UTCDateTime(), nullable=False),
    sa.Column("claimed_at", UTCDateTime(), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime()),
    sa.Column("export_gid", sa.String(64)),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # Whether it fired late, standing for how many missed occurrences (its card says so).
    sa.Column("late", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("coalesced", sa.Integer(), nullable=False, server_default="1"),
    sa.UniqueConstraint("schedule_id", "occurrence_at", name="uq_schedule_runs_occurrence"),
)


class RunOutcome(enum.StrEnum):
    """Where one occurrence of a schedule stands (`schedule_runs.outcome`)."""

    CLAIMED = "claimed"  # this replica's insert won; no Asana call yet
    ATTEMPTING = "attempting"  # marked before Asana is called: never retried blind
    RETRYING = "retrying"  # Asana refused, transiently: next_attempt_at says when again
    CREATED = "created"  # Asana answered with the new export (export_gid set)
    FAILED = "failed"  # refused, or retries ran out: nothing was created
    PAUSED = "paused"  # refused for a reason that needs a person: the schedule paused
    UNKNOWN = "unknown"  # the request may have reached Asana, no answer: never repeated
    SKIPPED = "skipped"  # not attempted (the schedule ended or was paused before it ran)


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """One recurring export, as `schedules` keeps it."""

    id: int
    team_id: str
    channel_id: str
    organization_gid: str
    trigger_text: str
    timezone: str
    created_by: str
    created_at: datetime
    paused_reason: str | None
    ended_at: datetime | None
    end_reason: str | None


@dataclass(frozen=True, slots=True)
class RunRow:
    """One occurrence of a schedule, claimed by the replica whose insert won."""

    id: int
    schedule_id: int
    occurrence_at: datetime
    claimed_at: datetime
    outcome: RunOutcome
    attempts: int
    next_attempt_at: datetime | None
    export_gid: str | None
    updated_at: datetime
    late: bool = False
    coalesced: int = 1


def _schedule_row(m: Mapping[Any, Any]) -> ScheduleRow:
    c = schedules.c
    return ScheduleRow(**{name: m[getattr(c, name)] for name in ScheduleRow.__slots__})


def _run_row(m: Mapping[Any, Any]) -> RunRow:
    c = schedule_runs.c
    fields = {name: m[getattr(c, name)] for name in RunRow.__slots__}
    fields["outcome"] = RunOutcome(fields["outcome"])
    return RunRow(**fields)


@dataclass(frozen=True, slots=True)
class WatchCaps:
    """The most active watches one person, and one channel, may have (a new watch past them is
    refused; asking again for one already watched is not)."""

    per_user: int
    per_channel: int


class WatchCapReached(Exception):
    """A new watch would pass a cap; `scope` is "user" or "channel"."""

    def __init__(self, scope: Literal["user", "channel"], cap: int) -> None:
        super().__init__(f"{scope} watch cap of {cap} reached")
        self.scope = scope
        self.cap = cap


@dataclass(frozen=True, slots=True)
class ExportRow:
    """One `exports` row as the watcher sees it (there is no download_url to see)."""

    gid: str
    state: ExportState
    raw_state: str | None
    organization_gid: str | None
    organization_name: str | None
    created_at: datetime | None
    next_poll_at: datetime | None
    poll_count: int
    consecutive_failures: int
    lease_owner: str | None
    lease_until: datetime | None
    last_checked_at: datetime | None
    last_error: str | None
    paused_reason: str | None
    updated_at: datetime

    def to_export(self) -> Export:
        """The stored facts as an Export, for rendering a card without calling Asana."""
        return Export(
            gid=self.gid,
            state=self.state,
            raw_state=self.raw_state,
            organization_gid=self.organization_gid,
            organization_name=self.organization_name,
            created_at=self.created_at,
        )


@dataclass(frozen=True, slots=True)
class PollResult:
    """One poll's outcome, as `Store.record_poll` writes it.

    `export` is what Asana answered; None means the poll failed and the stored facts are kept
    (a failure counts as a consecutive failure, a success resets the count). `state` stores a
    state no fetch returns (GONE) over the stored one.
    """

    next_poll_at: datetime | None
    export: Export | None = None
    error: str | None = None
    paused_reason: str | None = None
    state: ExportState | None = None


def _short(value: str | None, limit: int) -> str | None:
    """Keep free text within its column so a long Asana message cannot fail a write."""
    if value is None or len(value) <= limit:
        return value
    return value[: limit - 1] + "…"


def _export_row(m: Mapping[Any, Any]) -> ExportRow:
    c = exports.c
    return ExportRow(
        gid=m[c.gid],
        state=ExportState.stored(m[c.state]),
        raw_state=m[c.raw_state],
        organization_gid=m[c.organization_gid],
        organization_name=m[c.organization_name],
        created_at=m[c.created_at],
        next_poll_at=m[c.next_poll_at],
        poll_count=m[c.poll_count],
        consecutive_failures=m[c.consecutive_failures],
        lease_owner=m[c.lease_owner],
        lease_until=m[c.lease_until],
        last_checked_at=m[c.last_checked_at],
        last_error=m[c.last_error],
        paused_reason=m[c.paused_reason],
        updated_at=m[c.updated_at],
    )


def _subscription(m: Mapping[Any, Any]) -> Subscription:
    c = subscriptions.c
    return Subscription(
        id=m[c.id],
        export_gid=m[c.export_gid],
        team_id=m[c.team_id],
        channel_id=m[c.channel_id],
        user_id=m[c.user_id],
        created_at=m[c.created_at],
        card_ts=m[c.card_ts],
        notified_at=m[c.notified_at],
        notified_ts=m[c.notified_ts],
        ended_at=m[c.ended_at],
        end_reason=m[c.end_reason],
        schedule_run_id=m[c.schedule_run_id],
    )


#: Where each field of Subscription is in a row of all `subscriptions` columns, table order.
_SUBSCRIPTION_FIELDS = operator.itemgetter(
    *(subscriptions.c.keys().index(f.name) for f in dataclasses.fields(Subscription))
)


def subscription_of(row: Row) -> Subscription:
    """A watch from a row of all `subscriptions` columns in table order (`Store.read_short`)."""
    return Subscription(*_SUBSCRIPTION_FIELDS(row))


def _subscriptions(rows: Iterable[sa.Row[Any]]) -> list[Subscription]:
    return [_subscription(r._mapping) for r in rows]


def _has_active_subscription(table: sa.FromClause) -> sa.ColumnElement[bool]:
    s = subscriptions.c
    return sa.exists().where(s.export_gid == table.c.gid, s.ended_at.is_(None))


def _watchable(table: sa.FromClause) -> sa.ColumnElement[bool]:
    """Polling is worth it: a non-terminal state and someone still watching."""
    return sa.and_(
        table.c.state.in_([s.value for s in WATCHABLE_STATES]),
        _has_active_subscription(table),
    )


def _claimable(
    table: sa.FromClause, now: datetime | sa.BindParameter[datetime]
) -> sa.ColumnElement[bool]:
    """The design's claim predicate: due, watchable, lease free or expired."""
    return sa.and_(
        table.c.next_poll_at <= now,
        sa.or_(table.c.lease_until.is_(None), table.c.lease_until < now),
        _watchable(table),
    )


def _claim_statement(*, postgresql: bool) -> sa.Update:
    """The claim as one statement with bind parameters, built once per dialect.

    Building it per call (alias, predicate, subquery) cost about 1.8 ms of CPU of the 5.6 ms a
    claim took on PostgreSQL (bench/polling.py, 100,000 exports); the compiled form is cached
    by SQLAlchemy either way, the construction and its cache key are not.
    """
    due = exports.alias("due")
    now = sa.bindparam("now", type_=UTCDateTime())
    pick = (
        sa.select(due.c.gid)
        .where(_claimable(due, now))
        .order_by(due.c.next_poll_at, due.c.gid)
        .limit(sa.bindparam("limit", type_=sa.Integer()))
    )
    if postgresql:
        pick = pick.with_for_update(skip_locked=True, of=due)
    return (
        exports.update()
        .where(exports.c.gid.in_(pick))
        .values(
            lease_owner=sa.bindparam("owner"),
            lease_until=sa.bindparam("until", type_=UTCDateTime()),
        )
        .returning(*exports.c)
    )


_CLAIM_STATEMENTS = {pg: _claim_statement(postgresql=pg) for pg in (True, False)}

# The statements of the command and polling paths, built once with bind parameters: building
# a statement and its cache key per call cost more CPU than running it on SQLite (a one-row
# read: 240 µs built per call, 90 µs prebuilt, in one transaction on the store's thread).
_s, _e = subscriptions.c, exports.c

_ACTIVE_SUBSCRIPTION = sa.select(subscriptions).where(
    _s.channel_id == sa.bindparam("channel_id"),
    _s.export_gid == sa.bindparam("gid"),
    _s.ended_at.is_(None),
)

#: A channel's watches are the channel's (see Store.subscribe); a person's, per workspace.
_WATCH_COUNTS = sa.select(
    sa.select(sa.func.count())
    .where(_s.channel_id == sa.bindparam("channel_id"), _s.ended_at.is_(None))
    .scalar_subquery(),
    sa.select(sa.func.count())
    .where(
        _s.team_id == sa.bindparam("team_id"),
        _s.user_id == sa.bindparam("user_id"),
        _s.ended_at.is_(None),
    )
    .scalar_subquery(),
)  # (the channel's, the person's): one statement, each COUNT on its own index

_INSERT_SUBSCRIPTION = (
    subscriptions.insert()
    .values(
        export_gid=sa.bindparam("gid"),
        team_id=sa.bindparam("team_id"),
        channel_id=sa.bindparam("channel_id"),
        user_id=sa.bindparam("user_id"),
        created_at=sa.bindparam("now", type_=UTCDateTime()),
        schedule_run_id=sa.bindparam("schedule_run_id", type_=sa.Integer()),
    )
    .returning(*subscriptions.c)
)

_COUNT_WATCHERS = sa.select(sa.func.count()).where(
    _s.export_gid == sa.bindparam("gid"), _s.ended_at.is_(None)
)

_SET_CARD_TS = (
    subscriptions.update().where(_s.id == sa.bindparam("sub_id")).values(card_ts=sa.bindparam("ts"))
)

_EXPORT_ROW = sa.select(exports).where(_e.gid == sa.bindparam("gid"))


def upsert_insert(table: sa.Table, *, postgresql: bool) -> Any:
    """The dialect's INSERT for `table`, the one that offers ON CONFLICT."""
    return (pg_dialect.insert if postgresql else sqlite_dialect.insert)(table)


@functools.cache
def _upsert_export_statement(*, postgresql_dialect: bool, sets_next_poll: bool) -> Any:
    """INSERT ... ON CONFLICT (gid) DO UPDATE of one export's facts from a fetch.

    None organization fields and created_at keep what is stored; next_poll_at is replaced
    only when `sets_next_poll` (a new watch schedules a poll; a lookup does not).
    """
    values = {
        name: sa.bindparam(name, type_=exports.c[name].type)
        for name in (
            "gid",
            "state",
            "raw_state",
            "organization_gid",
            "organization_name",
            "created_at",
            "next_poll_at",
            "updated_at",
        )
    }
    insert = upsert_insert(exports, postgresql=postgresql_dialect).values(values)
    new = insert.excluded
    update: dict[str, Any] = {
        "state": new.state,
        "raw_state": new.raw_state,
        "organization_gid": sa.func.coalesce(new.organization_gid, _e.organization_gid),
        "organization_name": sa.func.coalesce(new.organization_name, _e.organization_name),
        "created_at": sa.func.coalesce(new.created_at, _e.created_at),
        "updated_at": new.updated_at,
        # The export was just fetched successfully, so the token works again.
        "paused_reason": None,
    }
    if sets_next_poll:
        update["next_poll_at"] = new.next_poll_at
    return insert.on_conflict_do_update(index_elements=["gid"], set_=update)


def _record_poll_statement() -> sa.Update:
    """One poll's outcome and the lease's release, for `Store.record_poll`.

    `answered`: Asana answered, so its state and raw state replace the stored ones; None
    organization fields and created_at keep what is stored either way. `state` (when not
    None) is stored over both. `failed` counts a consecutive failure, else resets the count.
    """
    answered = sa.bindparam("answered", type_=sa.Boolean())
    state = sa.bindparam("state", type_=sa.String())
    return (
        exports.update()
        .where(_e.gid == sa.bindparam("g"), _e.lease_owner == sa.bindparam("owner"))
        .values(
            lease_owner=None,
            lease_until=None,
            poll_count=_e.poll_count + 1,
            consecutive_failures=sa.case(
                (sa.bindparam("failed", type_=sa.Boolean()), _e.consecutive_failures + 1),
                else_=0,
            ),
            last_checked_at=sa.bindparam("now", type_=UTCDateTime()),
            updated_at=sa.bindparam("now", type_=UTCDateTime()),
            next_poll_at=sa.bindparam("next_poll_at", type_=UTCDateTime()),
            last_error=sa.bindparam("last_error", type_=sa.String()),
            paused_reason=sa.bindparam("paused_reason", type_=sa.String()),
            state=sa.func.coalesce(state, _e.state),
            raw_state=sa.case(
                (answered, sa.bindparam("raw_state", type_=sa.String())), else_=_e.raw_state
            ),
            organization_gid=sa.func.coalesce(
                sa.bindparam("organization_gid", type_=sa.String()), _e.organization_gid
            ),
            organization_name=sa.func.coalesce(
                sa.bindparam("organization_name", type_=sa.String()), _e.organization_name
            ),
            created_at=sa.func.coalesce(
                sa.bindparam("created_at", type_=UTCDateTime()), _e.created_at
            ),
        )
        .returning(_e.gid)
    )


_RECORD_POLL = _record_poll_statement()


def run_as_seen(run: RunRow) -> sa.ColumnElement[bool]:
    """A schedule run still as `run` saw it: the compare of its compare-and-set updates."""
    c = schedule_runs.c
    return sa.and_(c.id == run.id, c.outcome == run.outcome.value, c.attempts == run.attempts)


class Store:
    """The bot's only way to the database; SQLite for one process, PostgreSQL for replicas."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # A SQLite file is worked on by the store's own threads (bot.sqlite_thread): one
        # hand-off per statement instead of aiosqlite's several. PostgreSQL (and an in-memory
        # SQLite database, which a second engine could not share) use the async engine.
        sync = thread_engine(engine)
        self._threads = ThreadedSqlite(sync) if sync is not None else None
        # SQLite has one writer at a time and its busy handler is unfair (sleep-and-retry):
        # queueing this process's writers keeps the tail short (measured: p99 of 50
        # concurrent subscribes 1.7 s -> 0.4 s). PostgreSQL needs no such queue.
        self._write_queue: asyncio.Lock | None = (
            asyncio.Lock() if engine.dialect.name == "sqlite" else None
        )

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    def close(self) -> None:
        """Stop the store's SQLite threads and close their connections (the engine is the
        caller's to dispose)."""
        if self._threads is not None:
            self._threads.close()

    async def read(self, work: Callable[[Connection], T]) -> T:
        """`work(conn)` in one read-only transaction, which never takes SQLite's write lock.

        `work` runs short statements on a synchronous Connection: in the store's reader
        thread on a SQLite file (one hand-off, bot.sqlite_thread), through the async engine's
        `run_sync` otherwise. It must not block on anything but the database.
        """
        if self._threads is not None:
            return await self._threads.run(work, write=False)
        async with self._engine.connect() as conn:
            conn = await conn.execution_options(**{SQLITE_BEGIN_OPTION: "DEFERRED"})
            async with conn.begin():
                return await conn.run_sync(work)

    async def read_short(self, statement: Executable, parameters: Mapping[str, Any]) -> list[Row]:
        """The rows of one short indexed read on a command's path, as tuples. On a SQLite file
        it runs on the event loop's thread without a hand-off, unless SQLite would have to wait
        (bot.sqlite_thread, `read_here`); then, elsewhere, and while SQL is logged (LOG_SQL),
        through `read`. `statement` is one built once (a module constant): on SQLite it is
        compiled once (`bot.sqlite_thread.prepared`)."""
        if self._threads is not None and not sql_logged():
            found = self._threads.read_here(statement, parameters)
            if not isinstance(found, Busy):
                return found
        return await self.read(lambda conn: statement_rows(conn, statement, parameters))

    async def write(self, work: Callable[[Connection], T], *, short: bool = False) -> T:
        """`work(conn)` in one write transaction (BEGIN IMMEDIATE on SQLite, see bot.db),
        committed when it returns and rolled back when it raises.

        `short`: a write of a few prepared statements (`statement_rows`) on a command's or a
        poll's path. On a SQLite file it runs on the event loop's thread unless another
        connection holds the write lock (`bot.sqlite_thread`, `write_here`); then on the
        writer thread."""
        if self._threads is not None:
            if short and not sql_logged():
                done = self._threads.write_here(work)
                if not isinstance(done, Busy):
                    return done
            return await self._threads.run(work, write=True)
        if self._write_queue is None:
            async with self._engine.begin() as conn:
                return await conn.run_sync(work)
        async with self._write_queue, self._engine.begin() as conn:
            return await conn.run_sync(work)

    async def changed(self, statement: sa.Update) -> int:
        """How many rows one UPDATE changed, in a write transaction of its own: the answer of
        a compare-and-set."""
        return await self.write(lambda conn: conn.execute(statement).rowcount)

    # -- exports -------------------------------------------------------------------------

    @staticmethod
    def _upsert_export(
        conn: Connection, export: Export, *, now: datetime, next_poll_at: datetime | None
    ) -> None:
        statement = _upsert_export_statement(
            postgresql_dialect=conn.dialect.name == "postgresql",
            sets_next_poll=next_poll_at is not None,
        )
        statement_rows(
            conn,
            statement,
            {
                "gid": export.gid,
                "state": export.state.value,
                "raw_state": _short(export.raw_state, _RAW_STATE_MAX),
                "organization_gid": export.organization_gid,
                "organization_name": export.organization_name,
                "created_at": export.created_at,
                "next_poll_at": next_poll_at,
                "updated_at": now,
            },
        )

    async def get_export_row(self, gid: str) -> ExportRow | None:
        row = await self.read(lambda conn: conn.execute(_EXPORT_ROW, {"gid": gid}).first())
        return _export_row(row._mapping) if row else None

    # -- subscriptions -------------------------------------------------------------------

    async def subscribe(
        self,
        *,
        team_id: str,
        channel_id: str,
        user_id: str,
        export: Export,
        now: datetime,
        next_poll_at: datetime | None,
        caps: WatchCaps | None = None,
        schedule_run_id: int | None = None,
    ) -> tuple[Subscription, bool]:
        """Watch `export` in a channel; returns (subscription, created), one active per channel.

        A channel id names one conversation in every workspace of an Enterprise Grid org that
        shares it: a watch there is the channel's, whichever workspace (`team_id`) asked.

        Two racing calls create one row. The export upsert already serialises callers for one
        gid (row lock on PostgreSQL, BEGIN IMMEDIATE on SQLite); should anything else insert
        first, the partial unique index refuses the duplicate and we re-read the winner.
        With `caps`, a new watch past either cap raises WatchCapReached (counted by index in
        the write transaction: exact on SQLite; on PostgreSQL two racing new watches of one
        person in different channels may pass the cap by one).
        """

        asked = {"channel_id": channel_id, "gid": export.gid}

        def active(conn: Connection) -> Subscription | None:
            rows = statement_rows(conn, _ACTIVE_SUBSCRIPTION, asked)
            return subscription_of(rows[0]) if rows else None

        def watch(conn: Connection) -> tuple[Subscription, bool]:
            if caps is not None:
                self._check_caps(conn, caps, team_id, channel_id, user_id)
            self._upsert_export(conn, export, now=now, next_poll_at=next_poll_at)
            existing = active(conn)
            if existing is not None:
                return existing, False
            (row,) = statement_rows(
                conn,
                _INSERT_SUBSCRIPTION,
                {
                    "gid": export.gid,
                    "team_id": team_id,
                    "channel_id": channel_id,
                    "user_id": user_id,
                    "now": now,
                    "schedule_run_id": schedule_run_id,
                },
            )
            return subscription_of(row), True

        # Asking again is common: answer it without a write.
        found = await self.read_short(_ACTIVE_SUBSCRIPTION, asked)
        if found:
            return subscription_of(found[0]), False
        try:
            return await self.write(watch, short=True)
        except IntegrityError:
            existing = await self.read(active)
            if existing is None:
                raise
            return existing, False

    @staticmethod
    def _check_caps(
        conn: Connection, caps: WatchCaps, team_id: str, channel_id: str, user_id: str
    ) -> None:
        asking = {"channel_id": channel_id, "team_id": team_id, "user_id": user_id}
        ((in_channel, of_person),) = statement_rows(conn, _WATCH_COUNTS, asking)
        if int(in_channel) >= caps.per_channel:
            raise WatchCapReached("channel", caps.per_channel)
        if int(of_person) >= caps.per_user:
            raise WatchCapReached("user", caps.per_user)

    async def unwatch(
        self,
        *,
        team_id: str,
        channel_id: str,
        gid: str,
        now: datetime,
        reason: EndReason = EndReason.UNWATCHED,
    ) -> Subscription | None:
        """End the channel's active watch of `gid`; None when it was not watching.

        `team_id` (the asking workspace) is not part of the key: see `subscribe`.
        """
        s = subscriptions.c
        statement = (
            subscriptions.update()
            .where(
                s.channel_id == channel_id,
                s.export_gid == gid,
                s.ended_at.is_(None),
            )
            .values(ended_at=now, end_reason=_short(reason, _END_REASON_MAX))
            .returning(*subscriptions.c)
        )
        row = await self.write(lambda conn: conn.execute(statement).first())
        return _subscription(row._mapping) if row else None

    async def list_subscriptions(
        self, *, team_id: str, channel_id: str | None = None
    ) -> list[tuple[Subscription, ExportRow]]:
        """Active watches of a workspace (or of one channel, whichever workspace started them:
        see `subscribe`), oldest first, with their export."""
        s = subscriptions.c
        which = s.team_id == team_id if channel_id is None else s.channel_id == channel_id
        query = (
            sa.select(subscriptions, exports)
            .join(exports, exports.c.gid == s.export_gid)
            .where(which, s.ended_at.is_(None))
            .order_by(s.created_at, s.id)
        )
        rows = await self.read(lambda conn: conn.execute(query).all())
        return [(_subscription(r._mapping), _export_row(r._mapping)) for r in rows]

    async def active_subscriptions(self, gid: str) -> list[Subscription]:
        """Who to tell about `gid`, oldest first."""
        s = subscriptions.c
        query = (
            sa.select(subscriptions)
            .where(s.export_gid == gid, s.ended_at.is_(None))
            .order_by(s.created_at, s.id)
        )
        return _subscriptions(await self.read(lambda conn: conn.execute(query).all()))

    async def count_watchers(self, gid: str) -> int:
        """How many channels watch `gid`: a COUNT on a partial index, no rows loaded."""
        ((count,),) = await self.read_short(_COUNT_WATCHERS, {"gid": gid})
        return int(count)

    async def set_card_ts(self, sub_id: int, ts: str) -> None:
        """Remember the status card's message ts so chat.update can edit it in place."""
        parameters = {"sub_id": sub_id, "ts": ts}
        await self.write(lambda conn: statement_rows(conn, _SET_CARD_TS, parameters), short=True)

    async def end_subscription(self, sub_id: int, *, now: datetime, reason: EndReason) -> bool:
        """End one watch (finished, error, channel gone...); False if it had already ended."""
        s = subscriptions.c
        statement = (
            subscriptions.update()
            .where(s.id == sub_id, s.ended_at.is_(None))
            .values(ended_at=now, end_reason=_short(reason, _END_REASON_MAX))
            .returning(s.id)
        )
        return await self.write(lambda conn: conn.execute(statement).first()) is not None

    async def count_active_subscriptions(self) -> int:
        query = sa.select(sa.func.count()).where(subscriptions.c.ended_at.is_(None))
        return int(await self.read(lambda conn: conn.execute(query).scalar_one()))

    # -- polling -------------------------------------------------------------------------

    async def claim_due(
        self, *, owner: str, now: datetime, lease: timedelta, limit: int
    ) -> list[ExportRow]:
        """Lease up to `limit` due exports to `owner`, earliest first; disjoint across replicas.

        One UPDATE ... WHERE gid IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING on PostgreSQL;
        on SQLite the same statement runs under BEGIN IMMEDIATE, which serialises claimers.
        """
        if not owner or len(owner) > _OWNER_MAX:
            raise ValueError(f"lease owner must be 1..{_OWNER_MAX} characters")
        if lease <= timedelta(0):
            raise ValueError("lease must be positive")
        if limit <= 0:
            return []
        parameters = {"now": now, "limit": limit, "owner": owner, "until": now + lease}

        def claim(conn: Connection) -> list[sa.Row[Any]]:
            statement = _CLAIM_STATEMENTS[conn.dialect.name == "postgresql"]
            return list(conn.execute(statement, parameters).all())

        claimed = [_export_row(r._mapping) for r in await self.write(claim)]
        return sorted(claimed, key=lambda r: (r.next_poll_at or now, r.gid))

    async def record_poll(self, gid: str, *, owner: str, now: datetime, result: PollResult) -> bool:
        """Write one poll's outcome and release the lease; False if `owner` lost the lease.

        None organization fields and created_at in the answer keep what is stored.
        """
        export = result.export
        state = result.state or (export.state if export is not None else None)
        parameters = {
            "g": gid,
            "owner": owner,
            "now": now,
            "failed": result.error is not None,
            "next_poll_at": result.next_poll_at,
            "last_error": _short(result.error, _ERROR_MAX),
            "paused_reason": _short(result.paused_reason, _ERROR_MAX),
            "state": state.value if state is not None else None,
            "answered": export is not None,
            "raw_state": _short(export.raw_state, _RAW_STATE_MAX) if export else None,
            "organization_gid": export.organization_gid if export else None,
            "organization_name": export.organization_name if export else None,
            "created_at": export.created_at if export else None,
        }
        # One prepared statement, run where the poll runs (a short write, see `write`).
        rows = await self.write(
            lambda conn: statement_rows(conn, _RECORD_POLL, parameters), short=True
        )
        return bool(rows)

    async def release(self, gid: str, *, owner: str, next_poll_at: datetime | None) -> bool:
        """Give a claimed export back unpolled (budget empty, Retry-After); poll_count kept."""
        c = exports.c
        statement = (
            exports.update()
            .where(c.gid == gid, c.lease_owner == owner)
            .values(lease_owner=None, lease_until=None, next_poll_at=next_poll_at)
            .returning(c.gid)
        )
        return await self.write(lambda conn: conn.execute(statement).first()) is not None

    async def due_count(self, now: datetime) -> int:
        """How many exports a claim at `now` could take (for metrics and `check`)."""
        query = sa.select(sa.func.count()).select_from(exports).where(_claimable(exports, now))
        return int(await self.read(lambda conn: conn.execute(query).scalar_one()))

    # -- exactly-once notification ---------------------------------------------------------

    async def try_mark_notified(self, sub_id: int, *, now: datetime) -> bool:
        """Compare-and-set notified_at: True for exactly one caller, who may then post."""
        s = subscriptions.c
        statement = (
            subscriptions.update()
            .where(s.id == sub_id, s.notified_at.is_(None), s.ended_at.is_(None))
            .values(notified_at=now)
            .returning(s.id)
        )
        return await self.write(lambda conn: conn.execute(statement).first()) is not None

    async def record_notified(
        self, sub_id: int, ts: str, *, now: datetime, reason: EndReason
    ) -> None:
        """Record the posted notification's ts and end the watch, in one statement.

        Two statements left a watch told but active forever when a crash fell between them:
        recovery looks only at watches without a ts.
        """
        s = subscriptions.c
        statement = (
            subscriptions.update()
            .where(s.id == sub_id)
            .values(
                notified_ts=ts,
                ended_at=sa.func.coalesce(s.ended_at, now),
                end_reason=sa.func.coalesce(s.end_reason, _short(reason, _END_REASON_MAX)),
            )
        )
        await self.write(lambda conn: conn.execute(statement))

    async def unrecorded_notifications(self) -> list[Subscription]:
        """Claimed but never recorded (a crash mid-post): check Slack history, then finish."""
        s = subscriptions.c
        query = (
            sa.select(subscriptions)
            .where(s.notified_at.is_not(None), s.notified_ts.is_(None), s.ended_at.is_(None))
            .order_by(s.notified_at, s.id)
        )
        return _subscriptions(await self.read(lambda conn: conn.execute(query).all()))

    async def clear_notified(self, sub_id: int, *, claimed_at: datetime | None = None) -> bool:
        """Undo a claim whose post failed for good, so a later attempt may win it again.

        With `claimed_at`, only that very claim is undone: a replica that judged a claim stale
        must not undo the fresh claim another replica made since (it would be posted twice).
        """
        s = subscriptions.c
        claim = s.notified_at.is_not(None) if claimed_at is None else s.notified_at == claimed_at
        statement = (
            subscriptions.update()
            .where(s.id == sub_id, s.notified_ts.is_(None), claim)
            .values(notified_at=None)
            .returning(s.id)
        )
        return await self.write(lambda conn: conn.execute(statement).first()) is not None

    # -- recovery and shutdown -------------------------------------------------------------

    async def untold_subscriptions(self) -> list[Subscription]:
        """Active, never-told subscriptions of exports that ended (finished, error, or gone).

        A crash between recording the poll and posting leaves these; recovery tells them.
        """
        s, e = subscriptions.c, exports.c
        ended_export = e.state.in_([state.value for state in ExportState if state.has_ended])
        query = (
            sa.select(subscriptions)
            .join(exports, exports.c.gid == s.export_gid)
            .where(s.ended_at.is_(None), s.notified_at.is_(None), ended_export)
            .order_by(s.export_gid, s.id)
        )
        return _subscriptions(await self.read(lambda conn: conn.execute(query).all()))

    async def release_leases(self, owner: str) -> int:
        """Give back every lease `owner` holds (clean shutdown); returns how many."""
        c = exports.c
        statement = (
            exports.update()
            .where(c.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
            .returning(c.gid)
        )
        return len(await self.write(lambda conn: conn.execute(statement).all()))

    # -- exports the bot creates -----------------------------------------------------------

    async def claim_creation(
        self,
        *,
        request_key: str,
        team_id: str,
        channel_id: str,
        user_id: str,
        organization_gid: str,
        now: datetime,
    ) -> tuple[CreationRow, bool]:
        """Record a creation request before Asana is called; (row, True) for its first caller.

        The unique request key makes this the one place a retried or replayed command (on any
        replica) is recognised: a second caller gets (the first request's row, False) and must
        not call Asana.
        """
        c = created_exports.c
        statement = (
            created_exports.insert()
            .values(
                request_key=request_key,
                team_id=team_id,
                channel_id=channel_id,
                user_id=user_id,
                organization_gid=organization_gid,
                outcome=CreationOutcome.REQUESTED.value,
                requested_at=now,
            )
            .returning(*created_exports.c)
        )
        try:
            row = await self.write(lambda conn: conn.execute(statement).one())
            return _creation_row(row._mapping), True
        except IntegrityError:
            query = sa.select(created_exports).where(c.request_key == request_key)
            found = await self.read(lambda conn: conn.execute(query).first())
            if found is None:
                raise
            return _creation_row(found._mapping), False

    async def record_creation(
        self,
        creation_id: int,
        *,
        outcome: CreationOutcome,
        now: datetime,
        export_gid: str | None = None,
    ) -> None:
        """What became of a claimed creation request."""
        statement = (
            created_exports.update()
            .where(created_exports.c.id == creation_id)
            .values(outcome=outcome.value, export_gid=export_gid, answered_at=now)
        )
        await self.write(lambda conn: conn.execute(statement))

    async def running_creation(self, organization_gid: str) -> tuple[CreationRow, ExportRow] | None:
        """The newest export of this organization created through the bot and still running
        (not finished, failed or gone, and still watched somewhere, so its state is current)."""
        c = created_exports.c
        query = (
            sa.select(created_exports, exports)
            .join(exports, exports.c.gid == c.export_gid)
            .where(
                c.organization_gid == organization_gid,
                c.outcome == CreationOutcome.CREATED.value,
                _watchable(exports),
            )
            .order_by(c.requested_at.desc(), c.id.desc())
            .limit(1)
        )
        row = await self.read(lambda conn: conn.execute(query).first())
        if row is None:
            return None
        return _creation_row(row._mapping), _export_row(row._mapping)

    # -- recurring exports (schedules) -------------------------------------------------------

    async def add_schedule(
        self,
        *,
        team_id: str,
        channel_id: str,
        organization_gid: str,
        trigger_text: str,
        timezone: str,
        created_by: str,
        now: datetime,
    ) -> ScheduleRow:
        """Store a new schedule; its first occurrence is the first one after `now`."""
        statement = (
            schedules.insert()
            .values(
                team_id=team_id,
                channel_id=channel_id,
                organization_gid=organization_gid,
                trigger_text=trigger_text[:_TRIGGER_MAX],
                timezone=timezone[:64],
                created_by=created_by,
                created_at=now,
            )
            .returning(*schedules.c)
        )
        row = await self.write(lambda conn: conn.execute(statement).one())
        return _schedule_row(row._mapping)

    async def schedule(self, schedule_id: int) -> ScheduleRow | None:
        """One schedule by id, ended or not."""
        query = sa.select(schedules).where(schedules.c.id == schedule_id)
        row = await self.read(lambda conn: conn.execute(query).first())
        return None if row is None else _schedule_row(row._mapping)

    async def list_schedules(
        self, team_id: str, channel_id: str | None = None
    ) -> list[ScheduleRow]:
        """The schedules not ended, of one channel or (channel_id None) of the whole workspace."""
        c = schedules.c
        query = sa.select(schedules).where(c.team_id == team_id, c.ended_at.is_(None))
        if channel_id is not None:
            query = query.where(c.channel_id == channel_id)
        query = query.order_by(c.id)
        rows = await self.read(lambda conn: conn.execute(query).all())
        return [_schedule_row(r._mapping) for r in rows]

    async def active_schedules(self) -> list[tuple[ScheduleRow, datetime | None]]:
        """Every schedule not ended, with the latest occurrence any replica claimed for it."""
        r = schedule_runs.c
        latest = (
            sa.select(r.schedule_id, sa.func.max(r.occurrence_at).label("latest"))
            .group_by(r.schedule_id)
            .subquery()
        )
        query = (
            sa.select(schedules, latest.c.latest)
            .outerjoin(latest, latest.c.schedule_id == schedules.c.id)
            .where(schedules.c.ended_at.is_(None))
            .order_by(schedules.c.id)
        )
        rows = await self.read(lambda conn: conn.execute(query).all())
        return [(_schedule_row(row._mapping), row._mapping["latest"]) for row in rows]

    async def end_schedule(self, schedule_id: int, *, now: datetime, reason: str) -> bool:
        """End a schedule (removed, channel gone); False if it had already ended."""
        c = schedules.c
        statement = (
            schedules.update()
            .where(c.id == schedule_id, c.ended_at.is_(None))
            .values(ended_at=now, end_reason=reason[:_END_REASON_MAX])
        )
        return await self.changed(statement) == 1

    async def set_schedule_paused(self, schedule_id: int, reason: str | None) -> bool:
        """Pause (a reason) or resume (None); True only for the caller that changed it, so the
        channel is told once."""
        c = schedules.c
        changed = c.paused_reason.is_(None) if reason is not None else c.paused_reason.isnot(None)
        statement = (
            schedules.update()
            .where(c.id == schedule_id, c.ended_at.is_(None), changed)
            .values(paused_reason=None if reason is None else reason[:_ERROR_MAX])
        )
        return await self.changed(statement) == 1

    async def claim_run(
        self, schedule_id: int, occurrence_at: datetime, *, now: datetime
    ) -> RunRow | None:
        """Claim one occurrence: the row if this caller's insert won, None if another did.

        (schedule_id, occurrence_at) is unique, so of several replicas ticking at once exactly
        one gets the row and fires.
        """
        statement = (
            schedule_runs.insert()
            .values(
                schedule_id=schedule_id,
                occurrence_at=occurrence_at,
                claimed_at=now,
                outcome=RunOutcome.CLAIMED.value,
                attempts=0,
                updated_at=now,
            )
            .returning(*schedule_runs.c)
        )
        try:
            row = await self.write(lambda conn: conn.execute(statement).one())
        except IntegrityError:
            return None
        return _run_row(row._mapping)

    async def start_run_attempt(
        self, run: RunRow, *, now: datetime, late: bool = False, coalesced: int = 1
    ) -> RunRow | None:
        """Mark the run as being attempted BEFORE Asana is called (compare-and-set on its
        outcome and attempt count): the new row, or None if another caller got there first.
        Whether it is late, for how many occurrences, is kept for the export's card."""
        statement = (
            schedule_runs.update()
            .where(run_as_seen(run))
            .values(
                outcome=RunOutcome.ATTEMPTING.value,
                attempts=run.attempts + 1,
                next_attempt_at=None,
                updated_at=now,
                late=late,
                coalesced=max(1, coalesced),
            )
            .returning(*schedule_runs.c)
        )
        row = await self.write(lambda conn: conn.execute(statement).first())
        return None if row is None else _run_row(row._mapping)

    async def record_run(
        self,
        run_id: int,
        *,
        outcome: RunOutcome,
        now: datetime,
        export_gid: str | None = None,
        next_attempt_at: datetime | None = None,
    ) -> None:
        """What became of an attempt."""
        statement = (
            schedule_runs.update()
            .where(schedule_runs.c.id == run_id)
            .values(
                outcome=outcome.value,
                export_gid=export_gid,
                next_attempt_at=next_attempt_at,
                updated_at=now,
            )
        )
        await self.write(lambda conn: conn.execute(statement))

    async def settle_run(self, run: RunRow, outcome: RunOutcome, *, now: datetime) -> bool:
        """Set the outcome of a run only if it is still as `run` saw it (compare-and-set): True
        for the one caller that changed it, so the channel is told once."""
        statement = (
            schedule_runs.update()
            .where(run_as_seen(run))
            .values(outcome=outcome.value, next_attempt_at=None, updated_at=now)
        )
        return await self.changed(statement) == 1

    async def runs_to_resume(self, now: datetime, stale_before: datetime) -> list[RunRow]:
        """Runs that need a next step: a retry that is due, a claim nobody attempted, or an
        attempt left by a replica that died (older than `stale_before`: its outcome is unknown)."""
        c = schedule_runs.c
        query = (
            sa.select(schedule_runs)
            .where(
                sa.or_(
                    sa.and_(c.outcome == RunOutcome.RETRYING.value, c.next_attempt_at <= now),
                    sa.and_(
                        c.outcome.in_([RunOutcome.CLAIMED.value, RunOutcome.ATTEMPTING.value]),
                        c.updated_at <= stale_before,
                    ),
                )
            )
            .order_by(c.id)
        )
        rows = await self.read(lambda conn: conn.execute(query).all())
        return [_run_row(r._mapping) for r in rows]

    async def schedule_runs(self, schedule_id: int) -> list[RunRow]:
        """Every occurrence claimed for a schedule, oldest first."""
        c = schedule_runs.c
        query = (
            sa.select(schedule_runs).where(c.schedule_id == schedule_id).order_by(c.occurrence_at)
        )
        rows = await self.read(lambda conn: conn.execute(query).all())
        return [_run_row(r._mapping) for r in rows]
