"""Where archives are kept: one small interface over obstore, for every kind of ARCHIVE_URL.

Why obstore (the Rust `object_store` crate): one library speaks local directories, S3 (and
S3-compatible stores through AWS_ENDPOINT_URL), Google Cloud Storage and Azure, and streams an
async iterator into a multipart upload with a bounded number of parts in flight. What it
guarantees, and this module relies on (checked in obstore's put.rs and tests/test_archive_*):

- `put_async` of an async iterator is a multipart upload; when the iterator raises, obstore
  aborts the upload (S3 AbortMultipartUpload; a local store deletes its `#` staging file), and
  the exception comes back to the caller. So a transfer that must stop (lost lease, checksum
  mismatch, too many failures) raises *inside* its iterator, never cancels the put: a cancelled
  put would drop the upload without aborting it.
- A local store writes to a staging file beside the target and renames it into place on
  completion: no partial file ever exists under the final name.

Memory: obstore buffers one part of `part_size` bytes while it fills, and keeps at most
`concurrency` parts in flight, so one transfer holds about (concurrency + 1) x part_size.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
from collections.abc import AsyncIterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import obstore
from obstore.store import LocalStore, from_url

from bot.archive.leftovers import CleanupError, clean_leftovers
from bot.archive.naming import url_problem

log = logging.getLogger(__name__)

#: One request to an object store (a part, or completing the upload) may take this long.
OBJECT_STORE_TIMEOUT = "5 minutes"
#: S3 refuses parts under 5 MiB (but the last).
MIN_PART_SIZE = 5 * 1024 * 1024


#: obstore's tokio threads may still be letting go of Python objects just after an await
#: returned; an interpreter that finalizes right then aborts (SIGABRT, seen with obstore 0.11
#: and 0.12 on Python 3.11 in about one exit of ten). A moment's grace at exit avoids it.
_EXIT_GRACE_SECONDS = 0.2
atexit.register(time.sleep, _EXIT_GRACE_SECONDS)


class StorageError(Exception):
    """The store refused or failed an operation; the message never carries credentials."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object as listed: its path relative to the archive root, and its size."""

    path: str
    size: int


class ArchiveStorage:
    """The archive location of ARCHIVE_URL: put (streamed), list, delete, and how to name it.

    Paths are relative to the URL (its prefix included), with `/` separators.
    """

    def __init__(self, url: str, *, part_size: int = 8 * 1024 * 1024, concurrency: int = 4):
        problem = url_problem(url)
        if problem:
            raise StorageError(f"ARCHIVE_URL is not usable: {problem}")
        self.url = url.rstrip("/")
        self.part_size = max(part_size, MIN_PART_SIZE)
        self.concurrency = max(1, concurrency)
        self._store: Any = _open(url)

    @property
    def memory_bound(self) -> int:
        """Bytes one transfer may hold in the upload: the part filling plus those in flight."""
        return (self.concurrency + 1) * self.part_size

    def location(self, path: str) -> str:
        """Where an object is, as people read it (`s3://bucket/prefix/...`): never a link."""
        return f"{self.url}/{path}"

    async def put_stream(self, path: str, chunks: AsyncIterable[bytes]) -> None:
        """Stream `chunks` into `path`; an exception raised by `chunks` aborts the upload and
        is raised here as it was."""
        try:
            await obstore.put_async(
                self._store,
                path,
                chunks,
                use_multipart=True,
                chunk_size=self.part_size,
                max_concurrency=self.concurrency,
            )
        except StorageError:
            raise
        except Exception as exc:
            if _is_store_error(exc):
                raise StorageError(_describe(exc)) from None
            raise

    async def put_bytes(self, path: str, data: bytes) -> None:
        """A small object (a manifest, a probe) in one request."""
        try:
            await obstore.put_async(self._store, path, data, use_multipart=False)
        except Exception as exc:
            raise StorageError(_describe(exc)) from None

    async def read_bytes(self, path: str) -> bytes:
        try:
            result = await obstore.get_async(self._store, path)
            return bytes(await result.bytes_async())
        except Exception as exc:
            raise StorageError(_describe(exc)) from None

    async def size_of(self, path: str) -> int | None:
        """The object's size, or None when there is no such object."""
        try:
            meta = await obstore.head_async(self._store, path)
        except FileNotFoundError:
            return None
        except Exception as exc:
            if type(exc).__name__ == "NotFoundError":
                return None
            raise StorageError(_describe(exc)) from None
        return int(meta["size"])

    async def list(self, prefix: str) -> list[StoredObject]:
        """Every object under `prefix` (a folder: `1100/`)."""
        try:
            # collect_async, not `async for`: a drained list stream left to the garbage
            # collector aborts the interpreter at exit (obstore 0.12, seen here).
            listed = await obstore.list(self._store, prefix.rstrip("/") + "/").collect_async()
            found = [StoredObject(str(m["path"]), int(m["size"])) for m in listed]
        except FileNotFoundError:
            return []
        except Exception as exc:
            if type(exc).__name__ == "NotFoundError":
                return []
            raise StorageError(_describe(exc)) from None
        return found

    async def delete(self, path: str) -> None:
        try:
            await obstore.delete_async(self._store, path)
        except FileNotFoundError:
            return
        except Exception as exc:
            if type(exc).__name__ == "NotFoundError":
                return
            raise StorageError(_describe(exc)) from None

    async def clean_leftovers(self, path: str) -> int:
        """Remove what a killed transfer of `path` left beside it; returns how many.

        Call it only while holding the archive's lease (it could otherwise abort a live
        transfer). A local store's staging files (`<path>#<n>`) are invisible to obstore's
        listing, so they are found on disk. Object stores' unfinished multipart uploads need
        calls obstore does not expose: `bot.archive.leftovers` makes them.
        """
        try:
            return await clean_leftovers(self.url, path)
        except CleanupError as exc:  # the store refused: the archive goes on regardless
            log.warning("leftover uploads of an interrupted archive not cleaned: %s", exc)
            return 0


def _open(url: str) -> Any:
    parts = urlsplit(url)
    if parts.scheme == "file":
        # LocalStore, not from_url: the directory is created when missing.
        try:
            return LocalStore(Path(parts.path), mkdir=True)
        except Exception as exc:
            raise StorageError(f"ARCHIVE_URL is not usable: {_describe(exc)}") from None
    # obstore's 30 s default bounds the whole request, and S3 may take minutes to complete a
    # large multipart upload (moto: 23 s for 1 GiB on an idle 2-core machine); a timed-out
    # CompleteMultipartUpload is retried after S3 finished it, then "aborted" with a 404 that
    # hides the cause. Given client options replace those from the environment, so allow_http
    # is set here too.
    client: dict[str, Any] = {"timeout": OBJECT_STORE_TIMEOUT, "connect_timeout": "10 seconds"}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if parts.scheme == "s3" and endpoint and endpoint.startswith("http://"):
        client["allow_http"] = True  # an S3-compatible store on HTTP
    try:
        return from_url(url, client_options=client)
    except Exception as exc:
        raise StorageError(f"ARCHIVE_URL is not usable: {_describe(exc)}") from None


def _is_store_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("obstore") or isinstance(exc, OSError)


def _describe(exc: BaseException) -> str:
    """The store's complaint in one line, first line only (obstore's messages carry a debug
    dump of the request, which may hold a signed URL)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"
