"""The `archives` table: one row per finished export, claimed with a lease as polling is.

Exactly one archive per export, however many channels watched it and replicas saw it finish:
`enqueue` inserts the row once (a second insert changes nothing), and a replica archives only
while it holds the row's lease, renewed as the bytes flow. A replica killed mid-stream stops
renewing; once its lease has expired another claims the row and starts over. The download link
is never stored: there is no column for it. The App Home's summary reads `recent`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot.models import EndReason, Subscription
from bot.store import Store, UTCDateTime, _subscriptions, metadata, subscriptions, upsert_insert

_REASON_MAX = 500
_OWNER_MAX = 128


class ArchiveState(enum.StrEnum):
    QUEUED = "queued"  # waiting for a replica
    RUNNING = "running"  # a replica holds the lease and streams it
    DONE = "done"  # stored and verified; `location`, `size`, `sha256` say where and what
    FAILED = "failed"  # given up; `error` says why, and the channels were told once


archives = sa.Table(
    "archives",
    metadata,
    sa.Column("gid", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("organization_gid", sa.String(64)),
    sa.Column("enqueued_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    #: Runs started (claims); a row whose replicas keep dying stops after ARCHIVE_ATTEMPTS.
    sa.Column("runs", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("lease_owner", sa.String(_OWNER_MAX)),
    sa.Column("lease_until", UTCDateTime()),
    sa.Column("bytes_done", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("bytes_total", sa.BigInteger()),
    sa.Column("location", sa.Text()),
    sa.Column("size", sa.BigInteger()),
    sa.Column("sha256", sa.String(64)),
    sa.Column("error", sa.String(_REASON_MAX)),
    sa.Column("finished_at", UTCDateTime()),
    sa.Index("ix_archives_state", "state"),
)


@dataclass(frozen=True, slots=True)
class ArchiveRow:
    """One archive as stored (never a link: a location such as s3://bucket/prefix/...)."""

    gid: str
    state: ArchiveState
    organization_gid: str | None
    enqueued_at: datetime
    updated_at: datetime
    runs: int
    lease_owner: str | None
    lease_until: datetime | None
    bytes_done: int
    bytes_total: int | None
    location: str | None
    size: int | None
    sha256: str | None
    error: str | None
    finished_at: datetime | None


def _row(m: Mapping[Any, Any]) -> ArchiveRow:
    c = archives.c
    return ArchiveRow(
        gid=m[c.gid],
        state=ArchiveState(m[c.state]),
        organization_gid=m[c.organization_gid],
        enqueued_at=m[c.enqueued_at],
        updated_at=m[c.updated_at],
        runs=m[c.runs],
        lease_owner=m[c.lease_owner],
        lease_until=m[c.lease_until],
        bytes_done=m[c.bytes_done],
        bytes_total=m[c.bytes_total],
        location=m[c.location],
        size=m[c.size],
        sha256=m[c.sha256],
        error=m[c.error],
        finished_at=m[c.finished_at],
    )


def _short(text: str) -> str:
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 1] + "…"


def _running_under(gid: str, owner: str) -> sa.ColumnElement[bool]:
    """The archive of `gid`, still running under `owner`'s lease."""
    c = archives.c
    return sa.and_(c.gid == gid, c.lease_owner == owner, c.state == ArchiveState.RUNNING.value)


class Archives:
    """The archive queries, on the bot's `Store` (its transactions, its engine)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def enqueue(self, gid: str, *, organization_gid: str | None, now: datetime) -> bool:
        """Queue the export's archive; False when it already has a row (queued, done...)."""
        values = {
            "gid": gid,
            "state": ArchiveState.QUEUED.value,
            "organization_gid": organization_gid,
            "enqueued_at": now,
            "updated_at": now,
        }

        def work(conn: Connection) -> bool:
            insert = upsert_insert(archives, postgresql=conn.dialect.name == "postgresql")
            statement = insert.values(values).on_conflict_do_nothing()
            result = conn.execute(statement)
            return bool(result.rowcount)

        return await self._store.write(work)

    async def claim(
        self, *, owner: str, now: datetime, lease: timedelta, max_runs: int
    ) -> ArchiveRow | None:
        """Lease the oldest archive that is queued, or running under an expired lease.

        One replica wins each row (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite serialises
        writers). A row already started `max_runs` times is not claimed again: `exhausted`
        reports it, so it fails once instead of looping.
        """
        c = archives.c

        def work(conn: Connection) -> ArchiveRow | None:
            pick = (
                sa.select(c.gid)
                .where(
                    c.state.in_([ArchiveState.QUEUED.value, ArchiveState.RUNNING.value]),
                    sa.or_(c.lease_until.is_(None), c.lease_until < now),
                    c.runs < max_runs,
                )
                .order_by(c.enqueued_at, c.gid)
                .limit(1)
            )
            if conn.dialect.name == "postgresql":
                pick = pick.with_for_update(skip_locked=True)
            statement = (
                archives.update()
                .where(c.gid.in_(pick.scalar_subquery()))
                .values(
                    state=ArchiveState.RUNNING.value,
                    lease_owner=owner,
                    lease_until=now + lease,
                    runs=c.runs + 1,
                    bytes_done=0,
                    updated_at=now,
                )
                .returning(*archives.c)
            )
            found = conn.execute(statement).first()
            return _row(found._mapping) if found is not None else None

        return await self._store.write(work)

    async def exhausted(self, *, now: datetime, max_runs: int) -> list[ArchiveRow]:
        """Rows whose replicas died `max_runs` times (lease expired, still running)."""
        c = archives.c

        def work(conn: Connection) -> list[ArchiveRow]:
            rows = conn.execute(
                sa.select(archives).where(
                    c.state.in_([ArchiveState.QUEUED.value, ArchiveState.RUNNING.value]),
                    sa.or_(c.lease_until.is_(None), c.lease_until < now),
                    c.runs >= max_runs,
                )
            )
            return [_row(r._mapping) for r in rows]

        return await self._store.read(work)

    async def renew(
        self,
        gid: str,
        *,
        owner: str,
        now: datetime,
        lease: timedelta,
        done: int,
        total: int | None,
    ) -> bool:
        """Extend the lease and record the progress; False when `owner` lost the lease."""
        statement = (
            archives.update()
            .where(_running_under(gid, owner))
            .values(lease_until=now + lease, bytes_done=done, bytes_total=total, updated_at=now)
        )
        return bool(await self._store.changed(statement))

    async def finish(
        self, gid: str, *, owner: str, now: datetime, location: str, size: int, sha256: str
    ) -> bool:
        """Record the stored archive and end the lease; False when `owner` lost it first."""
        statement = (
            archives.update()
            .where(_running_under(gid, owner))
            .values(
                state=ArchiveState.DONE.value,
                lease_owner=None,
                lease_until=None,
                location=location,
                size=size,
                sha256=sha256,
                bytes_done=size,
                bytes_total=size,
                error=None,
                finished_at=now,
                updated_at=now,
            )
        )
        return bool(await self._store.changed(statement))

    async def fail(self, gid: str, *, owner: str | None, now: datetime, reason: str) -> bool:
        """Give up on the archive (once): True for the one caller whose update made it FAILED.

        `owner` None fails a row nobody holds (its replicas died too often).
        """
        c = archives.c
        owned = c.lease_owner == owner if owner is not None else sa.true()
        statement = (
            archives.update()
            .where(
                c.gid == gid,
                owned,
                c.state.in_([ArchiveState.QUEUED.value, ArchiveState.RUNNING.value]),
            )
            .values(
                state=ArchiveState.FAILED.value,
                lease_owner=None,
                lease_until=None,
                error=_short(reason),
                finished_at=now,
                updated_at=now,
            )
        )
        return bool(await self._store.changed(statement))

    async def release(self, gid: str, *, owner: str, now: datetime) -> bool:
        """Give the lease back, the run not counted (a clean shutdown, or Asana busy): another
        replica may claim it at once."""
        c = archives.c
        statement = (
            archives.update()
            .where(_running_under(gid, owner))
            .values(
                state=ArchiveState.QUEUED.value,
                lease_owner=None,
                lease_until=None,
                runs=sa.case((c.runs > 0, c.runs - 1), else_=0),
                updated_at=now,
            )
        )
        return bool(await self._store.changed(statement))

    async def get(self, gid: str) -> ArchiveRow | None:
        def work(conn: Connection) -> ArchiveRow | None:
            found = conn.execute(sa.select(archives).where(archives.c.gid == gid)).first()
            return _row(found._mapping) if found is not None else None

        return await self._store.read(work)

    async def recent(
        self, limit: int = 10, *, gids: Iterable[str] | None = None
    ) -> list[ArchiveRow]:
        """The latest archives, newest first: state, location, size (for the App Home); only
        those of `gids` when given (the exports a person may see watched)."""
        c = archives.c
        query = sa.select(archives).order_by(c.updated_at.desc(), c.gid.desc()).limit(limit)
        if gids is not None:
            query = query.where(c.gid.in_(sorted(set(gids))))
        return await self._store.read(lambda conn: [_row(r._mapping) for r in conn.execute(query)])

    async def audience(self, gid: str) -> list[Subscription]:
        """The watches an archive is told to: active ones, and those the finished post ended
        (their `notified_ts` is the thread to reply in), oldest first."""
        s = subscriptions.c
        query = (
            sa.select(subscriptions)
            .where(
                s.export_gid == gid,
                sa.or_(s.ended_at.is_(None), s.end_reason == EndReason.FINISHED.value),
            )
            .order_by(s.created_at, s.id)
        )
        return await self._store.read(lambda conn: _subscriptions(conn.execute(query)))
