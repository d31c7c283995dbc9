"""The schedule behind an export's card: recording a run's export, and reading card origins.

A watch that a schedule's occurrence started keeps the run's id (`subscriptions.schedule_run_id`);
the card reads the schedule's words and the run's time and lateness through it, on every edit
(`bot.notify`). Queries of this feature live here, on `bot.store`'s tables, not in the store.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from bot.messages import CardOrigin
from bot.models import Subscription
from bot.store import (
    CreationRow,
    RunRow,
    ScheduleRow,
    Store,
    _creation_row,
    _run_row,
    _subscription,
    created_exports,
    run_as_seen,
    schedule_runs,
    schedules,
    subscriptions,
)


@dataclass(frozen=True, slots=True)
class RunOrigin:
    """What a new watch of a run's export stores (the run) and its card shows (the origin)."""

    run_id: int
    card: CardOrigin


async def take_over(store: Store, run: RunRow, *, now: datetime) -> RunRow | None:
    """Take a run left by a replica that died (compare-and-set on its state and `updated_at`,
    which a second taker then no longer matches): the run as taken, or None if another took it.
    Taking it again later needs it to go stale again, as a lease would."""
    c = schedule_runs.c
    statement = (
        schedule_runs.update()
        .where(run_as_seen(run), c.updated_at == run.updated_at)
        .values(updated_at=now)
        .returning(*schedule_runs.c)
    )
    row = await store.write(lambda conn: conn.execute(statement).first())
    if row is None:
        return None
    return _run_row(row._mapping)


async def card_origins(store: Store, run_ids: Iterable[int | None]) -> dict[int, CardOrigin]:
    """The card origin of each run id given (unknown ids and None are left out)."""
    wanted = sorted({i for i in run_ids if i is not None})
    if not wanted:
        return {}
    r, s = schedule_runs.c, schedules.c
    query = (
        sa.select(r.id, r.occurrence_at, r.late, r.coalesced, s.id, s.trigger_text, s.timezone)
        .join(schedules, s.id == r.schedule_id)
        .where(r.id.in_(wanted))
    )
    rows = await store.read(lambda conn: conn.execute(query).all())
    return {
        row[0]: CardOrigin(
            schedule_id=row[4],
            when=row[5],
            timezone=row[6],
            occurrence_at=row[1],
            late=bool(row[2]),
            coalesced=int(row[3] or 1),
        )
        for row in rows
    }


def run_origin(schedule: ScheduleRow, run: RunRow) -> RunOrigin:
    """The origin a new watch of this run's export stores and shows."""
    card = CardOrigin(
        schedule_id=schedule.id,
        when=schedule.trigger_text,
        timezone=schedule.timezone,
        occurrence_at=run.occurrence_at,
        late=run.late,
        coalesced=run.coalesced,
    )
    return RunOrigin(run.id, card)


async def run_subscription(store: Store, run_id: int) -> Subscription | None:
    """The watch a run's export got in its channel, active or ended (the newest), if any."""
    c = subscriptions.c
    query = sa.select(subscriptions).where(c.schedule_run_id == run_id).order_by(c.id.desc())
    row = await store.read(lambda conn: conn.execute(query.limit(1)).first())
    return None if row is None else _subscription(row._mapping)


async def creation_of(store: Store, request_key: str) -> CreationRow | None:
    """The creation request recorded under this key (what Asana answered, if it was told)."""
    query = sa.select(created_exports).where(created_exports.c.request_key == request_key)
    row = await store.read(lambda conn: conn.execute(query).first())
    return None if row is None else _creation_row(row._mapping)
