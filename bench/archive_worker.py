"""Archive one export, or download it plainly, alone in this process; report time and memory.

`python -m bench.archive_worker MODE ASANA_BASE_URL TOKEN GID DEST` prints one JSON line:
{"mode", "bytes", "seconds", "rss_before_mb", "rss_peak_mb", "sha256"}.

- MODE `baseline`: GET the export for a fresh link, then a plain streaming httpx download of
  it to the file DEST: the issue's baseline.
- MODE `ours`: the bot's archive of the export to DEST, an ARCHIVE_URL (`file://...` or
  `s3://...`, the AWS_* variables from the environment).
- MODE `pipe`: the download piped into boto3's multipart upload to the S3 URL DEST: the plain
  tools' way to the same store.
- MODE `intake`: no download; ASANA_BASE_URL is a byte count streamed from memory into the
  store DEST: what the store alone takes.

`seconds` times the transfer only (the export's GET and the link included, the interpreter's
start and imports not); `rss_before_mb` is the resident set just before it and `rss_peak_mb`
the process's high-water mark (VmHWM) just after, so their difference is what the transfer
added.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

CHUNK = 64 * 1024


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _fresh_link(client: httpx.AsyncClient, base_url: str, token: str, gid: str) -> str:
    answer = await client.get(
        f"{base_url}/organization_exports/{gid}",
        headers={"Authorization": f"Bearer {token}"},
        params={"opt_fields": "state,download_url"},
    )
    answer.raise_for_status()
    return str(answer.json()["data"]["download_url"])


async def baseline(base_url: str, token: str, gid: str, dest: str) -> dict[str, Any]:
    digest, size = hashlib.sha256(), 0
    async with httpx.AsyncClient(timeout=60) as client:
        link = await _fresh_link(client, base_url, token, gid)
        async with client.stream("GET", link) as answer:
            answer.raise_for_status()
            with open(dest, "wb") as out:  # noqa: ASYNC230 - the baseline is the plain way
                async for chunk in answer.aiter_bytes(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
    return {"bytes": size, "sha256": digest.hexdigest()}


async def ours(base_url: str, token: str, gid: str, dest: str) -> dict[str, Any]:
    """The bot's archive of the export (`bot.archive.run.archive_export`: leftovers cleaned,
    the file streamed and verified, its manifest written) into the store at DEST, with the
    settings' default part size and concurrency."""
    from datetime import UTC, datetime

    from bot.archive.run import ArchiveRequest, archive_export
    from bot.archive.storage import ArchiveStorage
    from bot.archive.transfer import TransferConfig
    from bot.asana import AsanaClient
    from bot.config import Settings

    defaults = Settings.model_fields
    storage = ArchiveStorage(
        dest,
        part_size=defaults["ARCHIVE_PART_MB"].default * 1024 * 1024,
        concurrency=defaults["ARCHIVE_CONCURRENCY"].default,
    )
    async with AsanaClient(token, base_url) as asana, httpx.AsyncHTTPTransport() as wire:

        async def refresh() -> str:
            return str((await asana.get_export(gid)).download_url)

        async def progress(_done: int, _total: int | None) -> None:
            return None

        request = ArchiveRequest(
            export=await asana.get_export(gid),
            refresh=refresh,
            storage=storage,
            transport=wire,
            config=TransferConfig(),
            keep=0,
            bot_version="bench",
        )
        archived = await archive_export(request, progress, now=datetime.now(UTC))
    return {"bytes": archived.size, "sha256": archived.sha256}


async def pipe(base_url: str, token: str, gid: str, dest: str) -> dict[str, Any]:
    """The plain tools' way to S3: a streaming httpx download piped into boto3's multipart
    `upload_fileobj` (threads in s3transfer), with our part size and concurrency."""
    import boto3
    from boto3.s3.transfer import TransferConfig as BotoTransfer

    from bot.config import Settings

    defaults = Settings.model_fields
    part, threads = (
        defaults["ARCHIVE_PART_MB"].default * 1024 * 1024,
        defaults["ARCHIVE_CONCURRENCY"].default,
    )
    bucket, _, prefix = dest.removeprefix("s3://").partition("/")
    async with httpx.AsyncClient(timeout=60) as client:
        link = await _fresh_link(client, base_url, token, gid)
    size = 0
    with httpx.stream("GET", link, timeout=60) as answer:
        answer.raise_for_status()
        reader = _Reader(answer.iter_raw(CHUNK))
        boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).upload_fileobj(
            reader,
            bucket,
            f"{prefix}/bench/{gid}.json.gz".lstrip("/"),
            Config=BotoTransfer(multipart_chunksize=part, max_concurrency=threads),
        )
        size = reader.size
    return {"bytes": size, "sha256": ""}


class _Reader(io.RawIOBase):
    """A readable file over an iterator of byte strings (what upload_fileobj reads from)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces, self._left, self.size = pieces, b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._left = piece
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        self.size += n
        return n


async def intake(size: str, _token: str, _gid: str, dest: str) -> dict[str, Any]:
    """The store alone: `size` bytes from memory streamed into it, no download (its ceiling)."""
    from bot.archive.storage import ArchiveStorage

    storage, total = ArchiveStorage(dest), int(size)
    block = b"\x5a" * CHUNK

    async def chunks() -> Any:
        for _ in range(total // CHUNK):
            yield bytes(bytearray(block))  # a new object each time, as a download gives

    await storage.put_stream("bench/intake.bin", chunks())
    return {"bytes": total // CHUNK * CHUNK, "sha256": ""}


def main(argv: list[str]) -> None:
    mode, base_url, token, gid, dest = argv
    run = {"baseline": baseline, "ours": ours, "pipe": pipe, "intake": intake}[mode]
    # Imports before the "before" figure, in every mode: growth is the transfer's own.
    import bot.archive.run
    import bot.asana
    import bot.config  # noqa: F401

    if mode == "pipe":
        import boto3.s3.transfer  # noqa: F401

    rss_before = _status_mb("VmRSS")
    started = time.perf_counter()
    result = asyncio.run(run(base_url, token, gid, dest))
    seconds = time.perf_counter() - started
    result.update(
        mode=mode, seconds=seconds, rss_before_mb=rss_before, rss_peak_mb=_status_mb("VmHWM")
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
