"""The follow-ups of a watch, kept beside it: stall notes and the finished post's link expiry.

One row per subscription that needed one (`subscription_followups`), defined on `bot.store`'s
metadata and written through the `Store`'s own transactions. Each follow-up is claimed with a
compare-and-set before Slack is called, so of several replicas (or a restarted one) only the
winner posts or edits:

- stall: `stall_claimed_at` moves forward only when the previous note was recorded and is at
  least STALL_AFTER old; `stall_noted_at` equals it once the note is posted (`stall_notes`
  counts them and names each note in its once-key);
- link expiry: `expires_at` is when the finished post's link stops working (NULL: the post
  carried none); `expiry_claimed_at` is the claim, `expiry_done_at` the edit done. chat.update
  is idempotent, so a claim whose replica died is taken over after a grace and the same edit made.

No URL is stored: only when it stops working.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot.models import EndReason, Subscription
from bot.store import (
    ExportRow,
    Store,
    UTCDateTime,
    _export_row,
    _subscription,
    exports,
    metadata,
    subscription_of,
    subscriptions,
    upsert_insert,
)

subscription_followups = sa.Table(
    "subscription_followups",
    metadata,
    sa.Column(
        "subscription_id",
        sa.Integer(),
        sa.ForeignKey("subscriptions.id", name="fk_subscription_followups_subscription_id"),
        primary_key=True,
    ),
    sa.Column("stall_claimed_at", UTCDateTime()),
    sa.Column("stall_noted_at", UTCDateTime()),
    sa.Column("stall_notes", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("expires_at", UTCDateTime()),
    sa.Column("expiry_claimed_at", UTCDateTime()),
    sa.Column("expiry_done_at", UTCDateTime()),
    # Finding links due to expire without reading every row.
    sa.Index("ix_subscription_followups_expires_at", "expires_at"),
)

_f = subscription_followups.c
_s = subscriptions.c

#: Built once: a statement built per call spent more CPU on SQLAlchemy's cache key than the
#: read itself (audit lines are on a new watch's path).
_AUDIT_THREADS = (
    sa.select(subscriptions)
    .where(
        _s.export_gid == sa.bindparam("gid"),
        _s.card_ts.is_not(None),
        sa.or_(  # not IN: a statement read_short prepares once has no IN list
            _s.ended_at.is_(None),
            _s.end_reason == EndReason.FINISHED.value,
            _s.end_reason == EndReason.EXPORT_FAILED.value,
        ),
    )
    .order_by(_s.id.desc())
    .limit(sa.bindparam("limit"))
)


@dataclass(frozen=True, slots=True)
class StallCandidate:
    """An active watch of an export still running, with when it was last nudged."""

    subscription: Subscription
    export: ExportRow
    stall_claimed_at: datetime | None
    stall_noted_at: datetime | None
    stall_notes: int


@dataclass(frozen=True, slots=True)
class ExpiryCandidate:
    """A finished post whose link has stopped working and whose edit is not done."""

    subscription: Subscription
    export: ExportRow
    link_until: datetime
    expiry_claimed_at: datetime | None


def _insert(conn: Connection) -> Any:
    return upsert_insert(subscription_followups, postgresql=conn.dialect.name == "postgresql")


def _ensure_row(conn: Connection, sub_id: int) -> None:
    """The row to compare-and-set on; a replica that loses the insert race just goes on."""
    conn.execute(_insert(conn).values(subscription_id=sub_id).on_conflict_do_nothing())


class FollowupStore:
    """The queries of stall notes and link expiry, in the `Store`'s transactions."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # -- stall -------------------------------------------------------------------------

    async def stall_candidates(
        self, states: tuple[str, ...], *, now: datetime, every: timedelta
    ) -> list[StallCandidate]:
        """Active watches with a card, of exports in `states`, that may need a look now: a note
        due (`bot.stall.stall_due`, run `every` since Asana's created_at or the watch, and no
        note within `every`), or a claim not recorded as posted (`bot.stall.claim_state`).

        The database filters, so the pass every FOLLOWUP_SECONDS reads the few rows it acts on,
        not every running watch (at 1,000 watches that read and its Python rows were a
        measurable share of a command's CPU). The caller still decides on each row.
        """
        s = subscriptions.c
        before = now - every
        since = sa.func.coalesce(exports.c.created_at, s.created_at, type_=UTCDateTime())
        due = sa.and_(
            since <= before, sa.or_(_f.stall_noted_at.is_(None), _f.stall_noted_at <= before)
        )
        unrecorded = sa.and_(
            _f.stall_claimed_at.is_not(None),
            sa.or_(_f.stall_noted_at.is_(None), _f.stall_noted_at != _f.stall_claimed_at),
        )
        query = (
            sa.select(
                subscriptions, exports, _f.stall_claimed_at, _f.stall_noted_at, _f.stall_notes
            )
            .join(exports, exports.c.gid == s.export_gid)
            .outerjoin(subscription_followups, _f.subscription_id == s.id)
            .where(
                s.ended_at.is_(None),
                s.card_ts.is_not(None),
                exports.c.state.in_(states),
                sa.or_(due, unrecorded),
            )
            .order_by(s.id)
        )
        rows = await self._store.read(lambda conn: conn.execute(query).all())
        return [
            StallCandidate(
                subscription=_subscription(r._mapping),
                export=_export_row(r._mapping),
                stall_claimed_at=r._mapping[_f.stall_claimed_at],
                stall_noted_at=r._mapping[_f.stall_noted_at],
                stall_notes=r._mapping[_f.stall_notes] or 0,
            )
            for r in rows
        ]

    async def claim_stall(self, sub_id: int, *, now: datetime, every: timedelta) -> int | None:
        """Win the right to post the next stall note; its number, or None if another has it.

        Only when the previous note was recorded (or none was claimed) and is `every` old.
        """
        statement = (
            subscription_followups.update()
            .where(
                _f.subscription_id == sub_id,
                sa.or_(
                    _f.stall_claimed_at.is_(None),
                    sa.and_(
                        _f.stall_noted_at == _f.stall_claimed_at,
                        _f.stall_claimed_at <= now - every,
                    ),
                ),
            )
            .values(stall_claimed_at=now)
            .returning(_f.stall_notes)
        )

        def claim(conn: Connection) -> Any:
            _ensure_row(conn, sub_id)
            return conn.execute(statement).first()

        row = await self._store.write(claim)
        return None if row is None else int(row[0]) + 1

    async def record_stall(self, sub_id: int, *, claimed_at: datetime) -> bool:
        """The note claimed at `claimed_at` is posted."""
        statement = (
            subscription_followups.update()
            .where(_f.subscription_id == sub_id, _f.stall_claimed_at == claimed_at)
            .values(stall_noted_at=claimed_at, stall_notes=_f.stall_notes + 1)
        )
        return await self._store.changed(statement) == 1

    async def release_stall(self, sub_id: int, *, claimed_at: datetime) -> bool:
        """The note was not posted: give the claim back so the next run tries again."""
        statement = (
            subscription_followups.update()
            .where(_f.subscription_id == sub_id, _f.stall_claimed_at == claimed_at)
            .values(stall_claimed_at=_f.stall_noted_at)
        )
        return await self._store.changed(statement) == 1

    # -- link expiry -------------------------------------------------------------------

    async def record_links(self, links: Sequence[tuple[int, datetime | None]]) -> None:
        """Before finished posts go out: whether each carries a link, and until when (one
        write for a whole fan-out wave)."""
        if not links:
            return

        def record(conn: Connection) -> None:
            for sub_id, link_until in links:
                _ensure_row(conn, sub_id)
                conn.execute(
                    subscription_followups.update()
                    .where(_f.subscription_id == sub_id)
                    .values(expires_at=link_until, expiry_claimed_at=None, expiry_done_at=None)
                )

        await self._store.write(record)

    async def expiry_candidates(self, now: datetime, *, limit: int = 100) -> list[ExpiryCandidate]:
        """Posted links that have stopped working and whose post is not edited yet."""
        s = subscriptions.c
        query = (
            sa.select(subscriptions, exports, _f.expires_at, _f.expiry_claimed_at)
            .join(subscription_followups, _f.subscription_id == s.id)
            .join(exports, exports.c.gid == s.export_gid)
            .where(
                _f.expires_at <= now,
                _f.expiry_done_at.is_(None),
                s.notified_ts.is_not(None),
                s.end_reason == EndReason.FINISHED.value,
            )
            .order_by(_f.expires_at)
            .limit(limit)
        )
        rows = await self._store.read(lambda conn: conn.execute(query).all())
        return [
            ExpiryCandidate(
                subscription=_subscription(r._mapping),
                export=_export_row(r._mapping),
                link_until=r._mapping[_f.expires_at],
                expiry_claimed_at=r._mapping[_f.expiry_claimed_at],
            )
            for r in rows
        ]

    async def claim_expiry(self, sub_id: int, *, now: datetime, stale_before: datetime) -> bool:
        """Win the right to edit the post: unclaimed, or claimed by a replica gone quiet."""
        statement = (
            subscription_followups.update()
            .where(
                _f.subscription_id == sub_id,
                _f.expiry_done_at.is_(None),
                sa.or_(_f.expiry_claimed_at.is_(None), _f.expiry_claimed_at < stale_before),
            )
            .values(expiry_claimed_at=now)
        )
        return await self._store.changed(statement) == 1

    async def record_expired(self, sub_id: int, *, now: datetime) -> bool:
        """The post is edited (or can never be): done for good."""
        statement = (
            subscription_followups.update()
            .where(_f.subscription_id == sub_id, _f.expiry_done_at.is_(None))
            .values(expiry_done_at=now)
        )
        return await self._store.changed(statement) == 1

    async def release_expiry(self, sub_id: int, *, claimed_at: datetime) -> bool:
        """The edit failed for now: give the claim back for the next run."""
        statement = (
            subscription_followups.update()
            .where(_f.subscription_id == sub_id, _f.expiry_claimed_at == claimed_at)
            .values(expiry_claimed_at=None)
        )
        return await self._store.changed(statement) == 1

    async def followup(self, sub_id: int) -> Mapping[str, Any] | None:
        """The raw row (for tests and diagnostics)."""
        query = sa.select(subscription_followups).where(_f.subscription_id == sub_id)
        row = await self._store.read(lambda conn: conn.execute(query).first())
        return dict(row._mapping) if row else None

    async def audit_threads(self, gid: str, *, limit: int = 20) -> list[Subscription]:
        """The cards of `gid` whose threads hear its audit lines: active watches, and watches
        told the outcome (their card is still where the team looks). Newest first."""
        rows = await self._store.read_short(_AUDIT_THREADS, {"gid": gid, "limit": limit})
        return [subscription_of(row) for row in rows]
