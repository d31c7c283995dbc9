"""Shutdown lets every job that is running finish before the scheduler goes (bot.scheduler).

AsyncIOScheduler.shutdown() cancels coroutine jobs still in flight, which logs an ERROR and
leaves a job's work half done (CI once caught the schedule job cancelled mid-query on SIGTERM).
These tests run the real scheduler in the test's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.scheduler import RunningJobs, stop_scheduler


class _IdleWatcher:
    """The watcher's part of shutdown, with nothing polling and no lease held."""

    def __init__(self) -> None:
        self.released = 0

    async def idle(self) -> None:
        return None

    async def release_leases(self) -> int:
        self.released += 1
        return 0


class _SlowJob:
    """A job that runs until the test lets it finish, and says whether it was cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.finish = asyncio.Event()
        self.finished = False
        self.cancelled = False

    async def run(self) -> None:
        self.started.set()
        try:
            await self.finish.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.finished = True


def _scheduler_running(job: _SlowJob) -> tuple[AsyncIOScheduler, RunningJobs]:
    scheduler = AsyncIOScheduler()
    running = RunningJobs(scheduler)
    scheduler.add_job(
        job.run, IntervalTrigger(seconds=60), id="slow", next_run_time=datetime.now(UTC)
    )
    scheduler.start()
    return scheduler, running


async def test_stop_waits_for_a_running_job_and_logs_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = _SlowJob()
    scheduler, running = _scheduler_running(job)
    await asyncio.wait_for(job.started.wait(), 5)
    assert running.count == 1
    watcher = _IdleWatcher()
    with caplog.at_level(logging.INFO):
        stopping = asyncio.create_task(stop_scheduler(scheduler, running, watcher, grace=10))
        await asyncio.sleep(0.05)
        assert not stopping.done(), "shutdown did not wait for the running job"
        job.finish.set()
        await asyncio.wait_for(stopping, 5)
    assert job.finished and not job.cancelled
    assert running.count == 0 and not scheduler.running
    assert watcher.released == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def test_a_job_outliving_the_grace_is_cancelled_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = _SlowJob()
    scheduler, running = _scheduler_running(job)
    await asyncio.wait_for(job.started.wait(), 5)
    with caplog.at_level(logging.WARNING, logger="bot.scheduler"):
        await stop_scheduler(scheduler, running, _IdleWatcher(), grace=0.1)
        await asyncio.sleep(0)  # the cancellation reaches the job's task
        await asyncio.sleep(0)
    assert job.cancelled and not job.finished
    assert "1 job run(s) still running after 0s are cancelled" in caplog.text


async def test_no_job_running_stops_at_once() -> None:
    scheduler = AsyncIOScheduler()
    running = RunningJobs(scheduler)
    scheduler.start()
    await asyncio.wait_for(stop_scheduler(scheduler, running, _IdleWatcher(), grace=10), 1)
    assert not scheduler.running and running.count == 0
