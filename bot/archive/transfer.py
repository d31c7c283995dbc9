"""Streaming one export file from its download link into storage, resuming as `resume` says.

Nothing is held whole: bytes go from the HTTP response to obstore's multipart upload in pieces of
`buffer_bytes`, and obstore keeps at most (concurrency + 1) parts (`storage.ArchiveStorage`). So
the memory one archive takes is bounded by buffer_bytes + (concurrency + 1) x part_size, whatever
the file's size (40 MiB + 1 MiB with the defaults).

The link is a presigned URL with credentials in it: it is requested through an httpx transport
directly, not an httpx client, since the client logs every URL it requests; it is never logged,
stored, or put into an error message (errors name the status, or the exception's type).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from bot.archive import resume
from bot.archive.resume import Step
from bot.archive.storage import ArchiveStorage

#: Called with (bytes received, total or None) after each piece goes to storage; it may raise
#: (a lost lease) to stop the transfer, which then aborts the upload.
ProgressHook = Callable[[int, int | None], Awaitable[None]]
#: Returns a fresh download link (GET the export again from Asana).
LinkSource = Callable[[], Awaitable[str]]


class TransferFailed(Exception):
    """The file could not be archived within the attempts; `reason` says why, for people."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StartOver(Exception):
    """Raised inside the upload's iterator: abort this upload and start again from byte 0."""


@dataclass(frozen=True, slots=True)
class TransferConfig:
    """Bounds of one transfer (ARCHIVE_ATTEMPTS, ARCHIVE_STALL_SECONDS, ARCHIVE_RETRY_SECONDS)."""

    max_attempts: int = 5
    retry_initial: float = 2.0
    stall_seconds: float = 60.0
    connect_seconds: float = 10.0
    buffer_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Received:
    """What arrived: its size and SHA-256, and how many attempts failed on the way."""

    size: int
    sha256: str
    failures: int
    restarts: int


@dataclass
class _Hashes:
    sha256: hashlib._Hash = field(default_factory=hashlib.sha256)
    md5: hashlib._Hash | None = None


class Download:
    """One export file's download: `open()` the first answer, then `chunks()` the whole file.

    After a StartOver call `restart()` and `open()` again. Safe against every answer in
    `resume.judge`; bounded by `config.max_attempts` failures in all.
    """

    def __init__(
        self,
        link: str,
        refresh: LinkSource,
        *,
        transport: httpx.AsyncBaseTransport,
        config: TransferConfig | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._link = link
        self._refresh = refresh
        self._transport = transport
        self.config = config or TransferConfig()
        self._sleep = sleep
        self._response: httpx.Response | None = None
        self.failures = 0
        self.restarts = 0
        self.reasons: list[str] = []
        self._reset()

    def __repr__(self) -> str:  # never the link
        return f"Download(done={self.done}, total={self.total}, failures={self.failures})"

    def _reset(self) -> None:
        self.done = 0
        self.total: int | None = None
        self.headers: dict[str, str] = {}
        self._validator: str | None = None
        self._hashes = _Hashes()

    def restart(self) -> None:
        """Forget what was received: the next `open()` asks for the file from its start."""
        self.restarts += 1
        self._reset()

    # -- the wire -----------------------------------------------------------------------

    async def _send(self) -> httpx.Response:
        timeout = {
            "connect": self.config.connect_seconds,
            "read": self.config.stall_seconds,
            "write": self.config.connect_seconds,
            "pool": self.config.connect_seconds,
        }
        request = httpx.Request(
            "GET",
            self._link,
            headers=resume.range_headers(self.done, self._validator),
            extensions={"timeout": timeout},
        )
        return await self._transport.handle_async_request(request)

    async def _close_response(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            with contextlib.suppress(httpx.HTTPError):
                await response.aclose()

    async def aclose(self) -> None:
        await self._close_response()

    async def _failed(self, reason: str) -> None:
        """Count one failed attempt; give up past the limit, else wait before the next."""
        self.failures += 1
        self.reasons.append(reason)
        if self.failures >= self.config.max_attempts:
            raise TransferFailed(f"{reason}; gave up after {self.failures} attempts")
        await self._sleep(resume.retry_delay(self.failures, self.config.retry_initial))

    async def open(self) -> dict[str, str]:
        """Ask until an answer carries the bytes we need; its headers (lower-cased).

        Raises StartOver when the server cannot continue where we are, TransferFailed when the
        attempts are spent.
        """
        while True:
            try:
                response = await self._send()
            except httpx.HTTPError as exc:
                await self._failed(f"the download failed ({type(exc).__name__})")
                continue
            headers = {k.lower(): v for k, v in response.headers.items()}
            verdict = resume.judge(response.status_code, headers, done=self.done, total=self.total)
            if verdict.step is Step.CONTINUE:
                self._response = response
                if self.done == 0:
                    self.headers = headers
                    self.total = verdict.total
                    self._validator = resume.validator_of(headers)
                    if resume.wants_md5(headers.get("etag")):
                        self._hashes.md5 = hashlib.md5(usedforsecurity=False)
                return headers
            with contextlib.suppress(httpx.HTTPError):
                await response.aclose()
            if verdict.step is Step.START_OVER:
                await self._failed(verdict.reason)
                if self.done == 0:
                    continue  # nothing to undo: just ask again
                raise StartOver(verdict.reason)
            await self._failed(verdict.reason)
            if verdict.step is Step.REFRESH_LINK:
                self._link = await self._refresh()

    async def chunks(self, progress: ProgressHook) -> AsyncIterator[bytes]:
        """The whole file from where `open()` left it, verified before the last piece.

        Raises (inside the upload, which then aborts) StartOver, TransferFailed, or whatever
        `progress` raises.
        """
        buffer = bytearray()
        while True:
            if self._response is None:
                await self.open()
            assert self._response is not None
            try:
                async for piece in self._response.stream:  # raw: no Content-Encoding decoding
                    self._take(piece)
                    buffer += piece
                    if len(buffer) >= self.config.buffer_bytes:
                        yield bytes(buffer)
                        buffer.clear()
                        await progress(self.done, self.total)
            except httpx.HTTPError as exc:
                await self._close_response()
                await self._failed(
                    f"the download broke off after {self.done} bytes ({type(exc).__name__})"
                )
                continue
            await self._close_response()
            if self.total is not None and self.done < self.total:
                await self._failed(f"the download ended after {self.done} of {self.total} bytes")
                continue
            break
        problem = resume.mismatch(
            size=self.done,
            total=self.total,
            sha256=self._hashes.sha256.digest(),
            md5=self._hashes.md5.digest() if self._hashes.md5 is not None else None,
            etag=self.headers.get("etag"),
            checksum_sha256=self.headers.get("x-amz-checksum-sha256"),
        )
        if problem is not None:
            await self._failed(f"the file arrived damaged: {problem}")
            raise StartOver(problem)
        if buffer:
            yield bytes(buffer)
        await progress(self.done, self.total)

    def _take(self, piece: bytes) -> None:
        self.done += len(piece)
        if self.total is not None and self.done > self.total:
            raise httpx.RemoteProtocolError("more bytes than Content-Length")
        self._hashes.sha256.update(piece)
        if self._hashes.md5 is not None:
            self._hashes.md5.update(piece)

    def received(self) -> Received:
        return Received(
            size=self.done,
            sha256=self._hashes.sha256.hexdigest(),
            failures=self.failures,
            restarts=self.restarts,
        )


async def transfer(
    download: Download, storage: ArchiveStorage, path: str, progress: ProgressHook
) -> Received:
    """Stream the (already opened) download into `path`, starting over as often as it must.

    No partial object is ever left under `path`: every stop raises inside the upload's
    iterator, and obstore aborts the upload (see `bot.archive.storage`).
    """
    try:
        while True:
            try:
                await storage.put_stream(path, download.chunks(progress))
                return download.received()
            except StartOver:
                await download.aclose()
                download.restart()
                await download.open()
    finally:
        await download.aclose()
