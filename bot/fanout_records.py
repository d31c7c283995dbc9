"""The store writes of one notification wave, batched: one claim and one record per wave.

Telling 100 channels one by one cost two write transactions per channel (claim, then record
the posted ts), and on SQLite those are the fan-out's main cost (bench/coalescing.py). The
semantics are the store's own, for many subscriptions at once: `claim` is
`Store.try_mark_notified`'s compare-and-set and `record` is `Store.record_notified`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa

from bot.models import EndReason
from bot.store import _END_REASON_MAX, Store, _short, subscriptions


async def claim(store: Store, sub_ids: Sequence[int], *, now: datetime) -> set[int]:
    """Set notified_at on those of `sub_ids` nobody claimed yet: the ids this caller won."""
    if not sub_ids:
        return set()
    s = subscriptions.c
    statement = (
        subscriptions.update()
        .where(s.id.in_(list(sub_ids)), s.notified_at.is_(None), s.ended_at.is_(None))
        .values(notified_at=now)
        .returning(s.id)
    )
    return set(await store.write(lambda conn: conn.execute(statement).scalars().all()))


async def record(
    store: Store, posted: Iterable[tuple[int, str]], *, now: datetime, reason: EndReason
) -> None:
    """Record each posted notification's ts and end its watch, all in one transaction."""
    params = [{"sub_id": sub_id, "ts": ts} for sub_id, ts in posted]
    if not params:
        return
    s = subscriptions.c
    statement = (
        subscriptions.update()
        .where(s.id == sa.bindparam("sub_id"))
        .values(
            notified_ts=sa.bindparam("ts"),
            ended_at=sa.func.coalesce(s.ended_at, now),
            end_reason=sa.func.coalesce(s.end_reason, _short(reason, _END_REASON_MAX)),
        )
    )
    await store.write(lambda conn: conn.execute(statement, params))
