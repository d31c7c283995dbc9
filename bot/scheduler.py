"""APScheduler 3.11 wiring: the polling tick and the recovery job, in the bot's event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.watcher import Watcher

log = logging.getLogger(__name__)


def build_scheduler(
    watcher: Watcher, *, tick_seconds: float, recover_seconds: float
) -> AsyncIOScheduler:
    """Both jobs start at once, so a restarted replica polls what is due within one tick.

    coalesce: a late job runs once, not once per missed interval. The watcher serialises its
    own ticks, so overlapping runs return at once instead of logging "skipped" warnings.
    """
    scheduler = AsyncIOScheduler(
        timezone=UTC,
        job_defaults={"coalesce": True, "max_instances": 3, "misfire_grace_time": None},
    )
    now = datetime.now(UTC)
    scheduler.add_job(
        watcher.tick, IntervalTrigger(seconds=tick_seconds), id="tick", next_run_time=now
    )
    scheduler.add_job(
        watcher.recover,
        IntervalTrigger(seconds=recover_seconds),
        id="recover",
        next_run_time=now + timedelta(seconds=min(recover_seconds, 2.0)),
    )
    return scheduler


#: How often a replica looks for due schedule occurrences (and retries that are due).
SCHEDULE_TICK_SECONDS = 5.0


def add_schedule_job(
    scheduler: AsyncIOScheduler,
    fire: Callable[[], Awaitable[int]],
    *,
    seconds: float = SCHEDULE_TICK_SECONDS,
) -> None:
    """The schedule job: runs at once on start-up (a missed occurrence fires then, late)."""
    scheduler.add_job(
        fire, IntervalTrigger(seconds=seconds), id="schedules", next_run_time=datetime.now(UTC)
    )


async def stop_scheduler(scheduler: AsyncIOScheduler, watcher: Watcher, *, grace: float) -> None:
    """Stop starting jobs, let an in-flight tick finish, then give back any lease still held.

    AsyncIOScheduler.shutdown() cancels running coroutine jobs, so it comes last.
    """
    if scheduler.running:
        scheduler.pause()
    try:
        await asyncio.wait_for(watcher.idle(), grace)
    except TimeoutError:
        log.warning("a tick was still running after %.0fs; its leases are released", grace)
    if scheduler.running:
        scheduler.shutdown(wait=False)
    try:
        released = await watcher.release_leases()
    except Exception as exc:  # the database is gone: the leases expire by themselves
        log.warning("could not release leases on shutdown (%s)", type(exc).__name__)
        return
    if released:
        log.info("released %d lease(s) on shutdown", released)


def add_archive_job(
    scheduler: AsyncIOScheduler, run: Callable[[], Awaitable[int]], *, seconds: float
) -> None:
    """The archive job (bot.archive.job): claims one queued archive per run, from start-up on."""
    scheduler.add_job(
        run, IntervalTrigger(seconds=seconds), id="archives", next_run_time=datetime.now(UTC)
    )
