"""`asana-export-bot archive GID`: one finished export archived from a terminal, no Slack and no
database (a person asked for this one, so no lease is taken: the job and this may both write
it, and the object is replaced whole either way)."""

from __future__ import annotations

import httpx

from bot import __version__
from bot.archive.run import Archived, ArchiveRequest, archive_export
from bot.archive.storage import ArchiveStorage
from bot.archive.transfer import ProgressHook, TransferConfig, TransferFailed
from bot.asana import AsanaClient, AsanaError
from bot.config import Settings
from bot.models import Export, ExportState
from bot.runtime import utc_now


class NotFinished(Exception):
    """The export is not finished: there is nothing to archive yet."""

    def __init__(self, export: Export) -> None:
        super().__init__(f"export {export.gid} is {export.raw_state or export.state}, not finished")
        self.export = export


async def archive_by_hand(settings: Settings, gid: str, progress: ProgressHook) -> Archived:
    """Fetch the export, then archive it as the job does (same names, checks and retention).

    Raises AsanaError, NotFinished, TransferFailed or StorageError.
    """
    assert settings.ASANA_TOKEN is not None
    storage = ArchiveStorage(
        settings.ARCHIVE_URL,
        part_size=settings.ARCHIVE_PART_MB * 1024 * 1024,
        concurrency=settings.ARCHIVE_CONCURRENCY,
    )
    async with (
        AsanaClient(
            settings.ASANA_TOKEN.get_secret_value(),
            settings.ASANA_BASE_URL,
            timeout=settings.ASANA_TIMEOUT_SECONDS,
            max_retry_time=settings.ASANA_MAX_RETRY_SECONDS,
        ) as asana,
        httpx.AsyncHTTPTransport(retries=0) as wire,
    ):
        export = await asana.get_export(gid)
        if export.state is not ExportState.FINISHED:
            raise NotFinished(export)

        async def refresh() -> str:
            try:
                fresh = await asana.get_export(gid)
            except AsanaError as exc:
                raise TransferFailed(f"no fresh download link: Asana said {exc.kind}") from None
            if not fresh.download_url:
                raise TransferFailed(f"no fresh download link: the export is {fresh.state}")
            return fresh.download_url

        request = ArchiveRequest(
            export=export,
            refresh=refresh,
            storage=storage,
            transport=wire,
            config=TransferConfig(
                max_attempts=settings.ARCHIVE_ATTEMPTS,
                retry_initial=settings.ARCHIVE_RETRY_SECONDS,
                stall_seconds=settings.ARCHIVE_STALL_SECONDS,
            ),
            keep=settings.ARCHIVE_KEEP,
            bot_version=__version__,
        )
        return await archive_export(request, progress, now=utc_now())
