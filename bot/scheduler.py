"""APScheduler 3.11 wiring: the polling tick and the recovery job, in the bot's event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
    JobSubmissionEvent,
)
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


def add_followup_job(
    scheduler: AsyncIOScheduler, run: Callable[[], Awaitable[object]], *, seconds: float
) -> None:
    """Stall notes and link expiry (bot.followups); first run shortly after start-up."""
    scheduler.add_job(
        run,
        IntervalTrigger(seconds=seconds),
        id="followups",
        next_run_time=datetime.now(UTC) + timedelta(seconds=min(seconds, 5.0)),
    )


class RunningJobs:
    """How many of the scheduler's job runs are in flight, counted from its own events.

    AsyncIOScheduler.shutdown() cancels coroutine jobs that are still running: a job cancelled
    mid-query logs an ERROR and leaves its work half done. Shutdown waits on `idle()` first.
    A submission covers one or more run times, and each ends in exactly one executed, error or
    missed event, dispatched when the job's task is done.
    """

    def __init__(self, scheduler: AsyncIOScheduler) -> None:
        self._runs = 0
        self._idle = asyncio.Event()
        self._idle.set()
        scheduler.add_listener(self._submitted, EVENT_JOB_SUBMITTED)
        scheduler.add_listener(self._ended, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)

    @property
    def count(self) -> int:
        return self._runs

    def _submitted(self, event: JobSubmissionEvent) -> None:
        self._runs += len(event.scheduled_run_times)
        if self._runs:
            self._idle.clear()

    def _ended(self, event: JobEvent) -> None:
        self._runs = max(0, self._runs - 1)
        if not self._runs:
            self._idle.set()

    async def idle(self) -> None:
        """Return once no job run is in flight."""
        await self._idle.wait()


async def stop_scheduler(
    scheduler: AsyncIOScheduler, running: RunningJobs, watcher: Watcher, *, grace: float
) -> None:
    """Stop starting jobs, let the ones in flight finish, then give back any lease still held.

    AsyncIOScheduler.shutdown() cancels running coroutine jobs, so it comes last, and only
    what outlived the grace period is cancelled.
    """
    if scheduler.running:
        scheduler.pause()

    async def all_idle() -> None:
        await running.idle()
        await watcher.idle()

    try:
        await asyncio.wait_for(all_idle(), grace)
    except TimeoutError:
        log.warning(
            "%d job run(s) still running after %.0fs are cancelled; leases are released",
            running.count,
            grace,
        )
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
