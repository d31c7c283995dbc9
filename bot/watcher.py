"""One tick of watching: claim due exports, poll each once, decide what the watchers are owed.

Every replica runs the same tick. The database lease makes each export polled by one replica at a
time; the notifier (`bot.notify`) delivers what the decision says, each notification once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.exc import OperationalError

from bot.archive.queue import enqueue_archive
from bot.asana import AsanaClient, AsanaError
from bot.backoff import RetryPolicy
from bot.db import DatabaseUnavailable, describe_operational_error
from bot.decisions import (
    Outcome,
    PollPolicy,
    plan_after_failure,
    plan_after_success,
)
from bot.log_context import bind
from bot.models import ProblemKind
from bot.ratelimit import TokenBucket
from bot.recovery import Recovery
from bot.runtime import Runtime
from bot.store import ExportRow, PollResult, Store

log = logging.getLogger(__name__)

#: A background poll retries little: the next tick is the retry, and the lease must outlive it.
POLL_RETRY = RetryPolicy(max_attempts=2, max_retry_time=5.0)


@dataclass(frozen=True, slots=True)
class WatcherConfig:
    """Timing of the watcher; all configurable so tests and benchmarks run in seconds."""

    policy: PollPolicy = field(default_factory=PollPolicy)
    lease: timedelta = timedelta(seconds=60)
    batch: int = 50
    concurrency: int = 10

    @classmethod
    def from_runtime(cls, runtime: Runtime) -> WatcherConfig:
        s = runtime.settings
        return cls(
            policy=runtime.poll_policy,
            lease=timedelta(seconds=s.LEASE_SECONDS),
            batch=s.POLL_BATCH,
            concurrency=s.POLL_CONCURRENCY,
        )


class Watcher:
    """Claims due exports, polls each once and decides; safe to run in several replicas.

    What is said in Slack, and whether it may be, is `runtime.notify`'s business; the
    recovery job (`bot.recovery`) runs beside the tick, reachable as `recover()`.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        config: WatcherConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.runtime = runtime
        self.config = config or WatcherConfig.from_runtime(runtime)
        self.rng = rng or random.Random()
        self.recovery = Recovery(runtime)
        self._tick_lock = asyncio.Lock()
        #: When the scheduler last started a tick (time.monotonic), for readiness.
        self.ticked_at: float | None = None

    @property
    def owner(self) -> str:
        """This replica's name on the leases it takes."""
        return self.runtime.replica

    @property
    def store(self) -> Store:
        return self.runtime.store

    @property
    def asana(self) -> AsanaClient:
        return self.runtime.asana

    @property
    def budget(self) -> TokenBucket:
        return self.runtime.budget

    def now(self) -> datetime:
        return self.runtime.now()

    async def idle(self) -> None:
        """Return once no tick or recovery is running (for a clean shutdown)."""
        async with self._tick_lock:
            await self.recovery.idle()

    async def release_leases(self) -> int:
        """Give back every lease this replica holds, so another replica polls at once."""
        return await self.store.release_leases(self.owner)

    async def recover(self) -> None:
        """Run the recovery job once (`bot.recovery`). Never raises."""
        await self.recovery.run()

    # -- the tick ----------------------------------------------------------------------

    async def tick(self) -> int:
        """Claim and poll what is due; returns how many exports were polled. Never raises."""
        self.ticked_at = time.monotonic()
        if self._tick_lock.locked():
            return 0
        metrics = self.runtime.metrics
        async with self._tick_lock:
            result = "ok"
            try:
                return await self._tick()
            except DatabaseUnavailable as exc:
                # Its file was deleted: nothing to do until a restart, one line per tick.
                result = "database_unavailable"
                log.error("tick skipped: %s", exc)
                return 0
            except OperationalError as exc:
                # The database is restarting or locked: expected now and then, and the next
                # tick retries; one line each, not a traceback every TICK_SECONDS.
                result = "database_unavailable"
                log.warning(
                    "tick skipped, database unavailable: %s", describe_operational_error(exc)
                )
                return 0
            except Exception:
                result = "error"
                log.exception("tick failed; it will run again")
                return 0
            finally:
                metrics.ticks.labels(result).inc()
                metrics.tick_seconds.observe(time.monotonic() - self.ticked_at)

    async def _tick(self) -> int:
        now = self.now()
        room = min(self.config.batch, self.budget.available())
        if room == 0:
            return 0
        rows = await self.store.claim_due(
            owner=self.owner, now=now, lease=self.config.lease, limit=room
        )
        if not rows:
            return 0
        gate = asyncio.Semaphore(self.config.concurrency)

        async def guarded(row: ExportRow) -> bool:
            async with gate:
                try:
                    with bind(gid=row.gid):  # every line of this poll names the export
                        return await self._poll(row)
                except DatabaseUnavailable:
                    raise  # the tick says it once; the lease expires by itself
                except Exception:
                    self.runtime.metrics.polls.labels("error").inc()
                    log.exception("poll of export %s failed; retrying later", row.gid)
                    retry_at = self.now() + timedelta(seconds=self.config.policy.initial)
                    await self.store.release(row.gid, owner=self.owner, next_poll_at=retry_at)
                    return False

        return sum(await asyncio.gather(*(guarded(row) for row in rows)))

    async def _poll(self, row: ExportRow) -> bool:
        if not self.budget.try_acquire():
            self.runtime.metrics.deferred.labels("poll").inc()
            wait = self.budget.seconds_until_available()
            later = self.now() + timedelta(seconds=wait if math.isfinite(wait) else 60)
            await self.store.release(row.gid, owner=self.owner, next_poll_at=later)
            return False
        try:
            export = await self.asana.get_export(row.gid, policy=POLL_RETRY)
        except AsanaError as exc:
            await self._after_failure(row, exc)
            return True
        now = self.now()
        plan = plan_after_success(
            row.state,
            row.paused_reason is not None,
            row.poll_count,
            export,
            now=now,
            policy=self.config.policy,
            rng=self.rng,
        )
        await self.store.record_poll(
            row.gid,
            owner=self.owner,
            now=now,
            result=PollResult(next_poll_at=plan.next_poll_at, export=export),
        )
        self.runtime.metrics.polls.labels(plan.outcome.value).inc()
        if plan.outcome is Outcome.FINISHED:
            await enqueue_archive(self.runtime, export)  # before telling: a crash keeps it queued
        notify = self.runtime.notify
        if plan.state_changed or export.state.is_terminal:
            await notify.update_cards(export, next_check_at=plan.next_poll_at)
        if plan.outcome in (Outcome.FINISHED, Outcome.FAILED):
            await notify.notify_all(export, plan.outcome)
        return True

    async def _after_failure(self, row: ExportRow, exc: AsanaError) -> None:
        now = self.now()
        plan = plan_after_failure(
            exc.kind,
            retry_after=exc.retry_after,
            consecutive_failures=row.consecutive_failures,
            paused_reason=row.paused_reason,
            now=now,
            policy=self.config.policy,
            rng=self.rng,
        )
        if exc.kind in (ProblemKind.MALFORMED, ProblemKind.RATE_LIMITED):
            # Malformed says which (no `data`, or another export); a 429 is over the quota.
            log.warning(
                "poll of export %s failed (%s): %s; %s", row.gid, exc.kind, plan.outcome, exc
            )
        else:
            log.info("poll of export %s failed (%s): %s", row.gid, exc.kind, plan.outcome)
        await self.store.record_poll(
            row.gid,
            owner=self.owner,
            now=now,
            result=PollResult(
                next_poll_at=plan.next_poll_at,
                error=plan.error,
                paused_reason=plan.paused_reason,
                state=plan.state,
            ),
        )
        self.runtime.metrics.polls.labels(plan.outcome.value).inc()
        if plan.outcome is Outcome.GONE:
            await self.runtime.notify.notify_all(row.to_export(), Outcome.GONE)
        elif plan.announce_pause:
            await self.runtime.notify.announce_pause(row.gid, exc.kind)
