"""Archiving one finished export, start to end, without the database: name, transfer, manifest,
retention. The archive job (`bot.archive.job`) wraps it in a lease and Slack posts; the CLI's
`archive` command wraps it in a progress bar.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import httpx

from bot.archive import naming
from bot.archive.storage import ArchiveStorage, StorageError
from bot.archive.transfer import (
    Download,
    LinkSource,
    ProgressHook,
    TransferConfig,
    TransferFailed,
    transfer,
)
from bot.models import Export

log = logging.getLogger(__name__)

__all__ = ["ArchiveRequest", "Archived", "StorageError", "TransferFailed", "archive_export"]


@dataclass(frozen=True, slots=True)
class ArchiveRequest:
    """Everything one archive needs; `export` was fetched just now (its link is fresh)."""

    export: Export
    refresh: LinkSource
    storage: ArchiveStorage
    transport: httpx.AsyncBaseTransport
    config: TransferConfig
    keep: int  # ARCHIVE_KEEP: 0 keeps all
    bot_version: str


@dataclass(frozen=True, slots=True)
class Archived:
    """Where the export landed (a location, never a link), what it is, what retention removed."""

    location: str
    path: str
    size: int
    sha256: str
    removed: tuple[str, ...]
    failures: int
    restarts: int


async def archive_export(
    request: ArchiveRequest, progress: ProgressHook, *, now: datetime
) -> Archived:
    """Stream the export's file into storage, verified, then its manifest, then retention.

    Raises TransferFailed (the download could not be completed within the attempts) or
    StorageError (the store refused); whatever `progress` raises stops it, the upload aborted.
    """
    export, storage = request.export, request.storage
    if not export.download_url:
        raise TransferFailed("Asana gave no download link for the export")
    download = Download(
        export.download_url, request.refresh, transport=request.transport, config=request.config
    )
    try:
        headers = await download.open()
    except BaseException:
        await download.aclose()
        raise
    extension = naming.extension_of(headers.get("content-disposition"), export.download_url)
    name = naming.archive_name(export.organization_gid, export.created_at, export.gid, extension)
    removed_leftovers = await storage.clean_leftovers(name.path)
    if removed_leftovers:
        log.info("removed %d leftover upload(s) of an interrupted archive", removed_leftovers)
    try:
        await progress(0, download.total)  # the card says "Archiving… 0 B of ..." at once
    except BaseException:
        await download.aclose()
        raise
    received = await transfer(download, storage, name.path, progress)
    manifest = naming.Manifest(
        gid=export.gid,
        organization_gid=export.organization_gid,
        organization_name=export.organization_name,
        created_at=export.created_at,
        size=received.size,
        sha256=received.sha256,
        archived_at=now,
        bot_version=request.bot_version,
        file=name.path.rsplit("/", 1)[-1],
    )
    await storage.put_bytes(name.manifest_path, manifest.to_json())
    removed = await _apply_retention(storage, name, keep=request.keep)
    return Archived(
        location=storage.location(name.path),
        path=name.path,
        size=received.size,
        sha256=received.sha256,
        removed=tuple(removed),
        failures=received.failures,
        restarts=received.restarts,
    )


async def _apply_retention(
    storage: ArchiveStorage, name: naming.ArchiveName, *, keep: int
) -> list[str]:
    """Delete the organization's oldest archives beyond `keep` (never the one just made)."""
    if keep <= 0:
        return []
    listed = await storage.list(name.organization_gid)
    expired = naming.select_expired(
        [o.path for o in listed], organization_gid=name.organization_gid, keep=keep
    )
    removed: list[str] = []
    for path in expired:
        if path in (name.path, name.manifest_path):
            continue
        await storage.delete(path)
        removed.append(path)
    if removed:
        log.info(
            "retention removed %d object(s) of organization %s", len(removed), name.organization_gid
        )
    return removed
