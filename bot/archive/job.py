"""The archive job every replica runs: claim one queued archive, stream it, tell the channels.

Hooked to watching: when the watcher (or recovery) sees an export finished and ARCHIVE_URL is
set, `bot.archive.queue` queues it, once per export whichever replica and however many channels
saw it; this module is imported only where ARCHIVE_URL is set (`bot.lifecycle`).
`tick` (an APScheduler job, `bot.scheduler.add_archive_job`) claims the oldest queued archive
with a lease, which a background task renews while the bytes flow; a replica killed mid-stream
stops renewing, and after its lease expires another replica claims the archive and starts over
(the first one's upload is never completed under the final name). A row whose replicas died
ARCHIVE_ATTEMPTS times fails once instead of looping.

While it streams, the finished export's status cards show the progress, edited at most every
CARD_EDIT_SECONDS; when it is stored, the finished post's thread says where, its size and its
SHA-256; a failure is one post with the reason. Every post goes through `bot.notify`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import timedelta

import httpx
from sqlalchemy.exc import OperationalError

from bot import __version__, audit, messages
from bot.archive.progress import EditThrottle
from bot.archive.queue import enqueue_archive
from bot.archive.records import ArchiveRow, Archives
from bot.archive.run import Archived, ArchiveRequest, archive_export
from bot.archive.storage import ArchiveStorage, StorageError
from bot.archive.transfer import ProgressHook, TransferConfig, TransferFailed
from bot.asana import AsanaError
from bot.backoff import RetryPolicy
from bot.db import DatabaseUnavailable, describe_operational_error
from bot.log_context import bind
from bot.models import Export, ExportState, Subscription
from bot.runtime import Runtime

log = logging.getLogger(__name__)

#: A background fetch retries little: the next run is the retry.
ARCHIVE_FETCH_RETRY = RetryPolicy(max_attempts=2, max_retry_time=5.0)
#: How often a replica looks for queued archives.
ARCHIVE_TICK_SECONDS = 5.0


class LeaseLost(Exception):
    """Another replica holds the archive now: stop, the upload aborted."""


class Stopping(Exception):
    """This replica is shutting down: stop, the upload aborted, the lease given back."""


def transfer_config(runtime: Runtime) -> TransferConfig:
    s = runtime.settings
    return TransferConfig(
        max_attempts=s.ARCHIVE_ATTEMPTS,
        retry_initial=s.ARCHIVE_RETRY_SECONDS,
        stall_seconds=s.ARCHIVE_STALL_SECONDS,
    )


def open_storage(runtime: Runtime) -> ArchiveStorage:
    """The ARCHIVE_URL store with its part size and concurrency (the memory bound)."""
    s = runtime.settings
    return ArchiveStorage(
        s.ARCHIVE_URL, part_size=s.ARCHIVE_PART_MB * 1024 * 1024, concurrency=s.ARCHIVE_CONCURRENCY
    )


class Archiver:
    """The archive job of one replica; safe to run in several replicas at once."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rt = runtime
        self.records = Archives(runtime.store)
        self._transport = transport
        self._clock = clock
        self._storage: ArchiveStorage | None = None
        self._busy = asyncio.Lock()
        self._stopping = False

    @property
    def enabled(self) -> bool:
        return bool(self._rt.settings.ARCHIVE_URL)

    @property
    def _lease(self) -> timedelta:
        return timedelta(seconds=self._rt.settings.LEASE_SECONDS)

    def storage(self) -> ArchiveStorage:
        if self._storage is None:
            self._storage = open_storage(self._rt)
        return self._storage

    # -- the hook --------------------------------------------------------------------------

    async def enqueue(self, export: Export) -> bool:
        """Queue a finished export's archive (once per export). Never raises."""
        return await enqueue_archive(self._rt, export)

    # -- the job ---------------------------------------------------------------------------

    async def idle(self) -> None:
        async with self._busy:
            return

    async def stop(self, grace: float) -> None:
        """Stop starting archives; one in flight aborts its upload and gives its lease back."""
        self._stopping = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle(), grace)

    async def tick(self) -> int:
        """Claim and run one queued archive; how many ran. Overlapping ticks return at once."""
        if not self.enabled or self._stopping or self._busy.locked():
            return 0
        async with self._busy:
            try:
                await self._fail_exhausted()
                row = await self.records.claim(
                    owner=self._rt.replica,
                    now=self._rt.now(),
                    lease=self._lease,
                    max_runs=self._rt.settings.ARCHIVE_ATTEMPTS,
                )
                if row is None:
                    return 0
                with bind(gid=row.gid):
                    await self._run(row)
                return 1
            except DatabaseUnavailable as exc:
                log.error("archive job skipped: %s", exc)
            except OperationalError as exc:
                log.warning(
                    "archive job skipped, database unavailable: %s",
                    describe_operational_error(exc),
                )
            except Exception:
                log.exception("archive job failed; it will run again")
            return 0

    async def _fail_exhausted(self) -> None:
        limit = self._rt.settings.ARCHIVE_ATTEMPTS
        for row in await self.records.exhausted(now=self._rt.now(), max_runs=limit):
            reason = f"the replicas archiving it stopped {row.runs} times"
            if await self.records.fail(row.gid, owner=None, now=self._rt.now(), reason=reason):
                await self._tell_failure(row.gid, reason)

    async def _fetch(self, gid: str) -> Export:
        """The export as Asana has it now (a fresh link), within the polling budget."""
        budget = self._rt.budget
        if not budget.try_acquire():
            raise _Later("the request budget is spent")
        return await self._rt.asana.get_export(gid, policy=ARCHIVE_FETCH_RETRY)

    async def _refresh(self, gid: str) -> str:
        try:
            export = await self._fetch(gid)
        except _Later as exc:
            raise TransferFailed(f"no fresh download link: {exc}") from None
        except AsanaError as exc:
            raise TransferFailed(f"no fresh download link: Asana said {exc.kind}") from None
        if export.state is not ExportState.FINISHED or not export.download_url:
            raise TransferFailed(f"no fresh download link: the export is {export.state}")
        log.info("fetched a fresh download link for export %s", gid)
        return export.download_url

    async def _run(self, row: ArchiveRow) -> None:
        rt, gid = self._rt, row.gid
        try:
            export = await self._fetch(gid)
        except (_Later, AsanaError) as exc:
            kind = getattr(exc, "kind", None)
            if kind is not None and not kind.is_transient:
                reason = f"Asana answered {kind} when asked for the export"
                if await self.records.fail(gid, owner=rt.replica, now=rt.now(), reason=reason):
                    await self._tell_failure(gid, reason)
                return
            log.info("archive of %s postponed: %s", gid, exc)
            await self.records.release(gid, owner=rt.replica, now=rt.now())
            return
        if export.state is not ExportState.FINISHED:
            reason = f"the export is {export.state}, not finished"
            if await self.records.fail(gid, owner=rt.replica, now=rt.now(), reason=reason):
                await self._tell_failure(gid, reason)
            return
        keeper = _LeaseKeeper(self, gid)
        throttle = EditThrottle(self._clock)

        async def progress(done: int, total: int | None) -> None:
            keeper.done, keeper.total = done, total
            if keeper.lost:
                raise LeaseLost(gid)
            if self._stopping:
                raise Stopping(gid)
            if throttle.due():
                await self._show_progress(export, done, total)

        async with httpx.AsyncHTTPTransport(retries=0) as wire:  # no redirects, no URL logs
            await self._stream(row, export, keeper, progress, wire)

    async def _stream(
        self,
        row: ArchiveRow,
        export: Export,
        keeper: _LeaseKeeper,
        progress: ProgressHook,
        wire: httpx.AsyncBaseTransport,
    ) -> None:
        rt, gid = self._rt, row.gid
        request = ArchiveRequest(
            export=export,
            refresh=lambda: self._refresh(gid),
            storage=self.storage(),
            transport=self._transport or wire,
            config=transfer_config(rt),
            keep=rt.settings.ARCHIVE_KEEP,
            bot_version=__version__,
        )
        started = self._clock()
        keeper.start()
        try:
            archived = await archive_export(request, progress, now=rt.now())
        except LeaseLost:
            log.warning("archive of export %s: another replica holds its lease now", gid)
            return
        except Stopping:
            await self.records.release(gid, owner=rt.replica, now=rt.now())
            log.info("archive of export %s stopped for shutdown; its lease is released", gid)
            return
        except (TransferFailed, StorageError) as exc:
            reason = str(exc)
            log.warning("archive of export %s failed: %s", gid, reason)
            if await self.records.fail(gid, owner=rt.replica, now=rt.now(), reason=reason):
                await self._tell_failure(gid, reason)
            return
        finally:
            await keeper.stop()
        if not await self.records.finish(
            gid,
            owner=rt.replica,
            now=rt.now(),
            location=archived.location,
            size=archived.size,
            sha256=archived.sha256,
        ):
            log.warning("archive of export %s stored, but its lease was lost first", gid)
            return
        log.info(
            "export %s archived to %s (%d bytes, sha256 %s)",
            gid,
            archived.location,
            archived.size,
            archived.sha256,
            extra={
                "event": "export_archived",
                "export_gid": gid,
                "organization_gid": export.organization_gid,
                "location": archived.location,
                "size": archived.size,
                "sha256": archived.sha256,
                "seconds": round(self._clock() - started, 3),
                "failures": archived.failures,
                "restarts": archived.restarts,
                "removed": len(archived.removed),
            },
        )
        await self._tell_success(export, archived)
        await audit.archived(rt, gid, archived.location)

    # -- what the channels see ---------------------------------------------------------------

    async def _audience(self, gid: str) -> list[Subscription]:
        return await self.records.audience(gid)

    async def _show_progress(self, export: Export, done: int, total: int | None) -> None:
        subs = await self._audience(export.gid)
        card = messages.render_card_archiving(
            export, now=self._rt.now(), watchers=None, done=done, total=total
        )
        for sub in subs:
            if sub.card_ts and not self._rt.notify.paused():
                await self._rt.notify.update(sub.channel_id, sub.card_ts, card)

    async def _tell_success(self, export: Export, archived: Archived) -> None:
        notify = self._rt.notify
        subs = await self._audience(export.gid)
        card = messages.render_card_archived(
            export, now=self._rt.now(), watchers=None, location=archived.location
        )
        reply = messages.render_archived(
            export.gid, location=archived.location, size=archived.size, sha256=archived.sha256
        )
        for sub in subs:
            if sub.card_ts:
                await notify.update(sub.channel_id, sub.card_ts, card)
            await notify.post(sub.channel_id, reply, thread_ts=sub.notified_ts)

    async def _tell_failure(self, gid: str, reason: str) -> None:
        message = messages.render_archive_failed(gid, reason=reason)
        for sub in await self._audience(gid):
            await self._rt.notify.post(sub.channel_id, message, thread_ts=sub.notified_ts)


class _Later(Exception):
    """Not now (the budget is spent): the archive is released and claimed again later."""


class _LeaseKeeper:
    """Renews the archive's lease (and records its progress) while the transfer runs.

    A background task, so a stalled download (no bytes for ARCHIVE_STALL_SECONDS) keeps the
    lease too; `lost` turns True when the renewal finds another owner, and the progress hook
    then stops the transfer.
    """

    def __init__(self, archiver: Archiver, gid: str) -> None:
        self._archiver = archiver
        self._gid = gid
        self.done = 0
        self.total: int | None = None
        self.lost = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep(), name=f"archive-lease-{self._gid}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _keep(self) -> None:
        rt = self._archiver._rt
        every = max(0.5, rt.settings.LEASE_SECONDS / 3)
        while True:
            await asyncio.sleep(every)
            try:
                held = await self._archiver.records.renew(
                    self._gid,
                    owner=rt.replica,
                    now=rt.now(),
                    lease=self._archiver._lease,
                    done=self.done,
                    total=self.total,
                )
            except Exception as exc:  # the database is down: the next renewal may work
                log.warning("could not renew the archive lease (%s)", type(exc).__name__)
                continue
            if not held:
                self.lost = True
                return
