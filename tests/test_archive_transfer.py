"""The transfer against the fake Asana's export files, into a local directory store."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.archive.storage import ArchiveStorage
from bot.archive.transfer import Download, TransferConfig, TransferFailed, transfer
from bot.demo.fake_asana import FakeAsana

GID = "1200000000000777"
ORG = "1100000000000001"
SIZE = 3 * 1024 * 1024 + 12_345


@pytest.fixture
def fake() -> Iterator[FakeAsana]:
    with FakeAsana() as server:
        server.set_export(GID, "finished")
        yield server


def _link(fake: FakeAsana) -> str:
    with httpx.Client(headers={"Authorization": f"Bearer {fake.token}"}) as client:
        answer = client.get(f"{fake.base_url}/organization_exports/{GID}")
    return str(answer.json()["data"]["download_url"])


async def _archive(
    fake: FakeAsana, root: Path, *, attempts: int = 5, progress_hook=None
) -> tuple[object, list[int]]:
    storage = ArchiveStorage(f"file://{root}", part_size=5 * 1024 * 1024, concurrency=2)
    refreshed: list[int] = []

    async def refresh() -> str:
        refreshed.append(1)
        return _link(fake)

    seen: list[int] = []

    async def progress(done: int, total: int | None) -> None:
        seen.append(done)
        if progress_hook is not None:
            progress_hook(done)

    async with httpx.AsyncHTTPTransport() as wire:
        download = Download(
            _link(fake),
            refresh,
            transport=wire,
            config=TransferConfig(max_attempts=attempts, retry_initial=0, stall_seconds=1),
        )
        await download.open()
        received = await transfer(download, storage, f"{ORG}/file.json.gz", progress)
    return received, refreshed


def _stored(root: Path) -> bytes:
    return (root / ORG / "file.json.gz").read_bytes()


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in (root / ORG).iterdir()) if (root / ORG).exists() else []


async def test_the_file_arrives_whole_with_its_sha256(fake: FakeAsana, tmp_path: Path) -> None:
    served = fake.serve_file(GID, SIZE)
    received, refreshed = await _archive(fake, tmp_path)
    assert received.size == SIZE and received.sha256 == served.sha256
    assert hashlib.sha256(_stored(tmp_path)).hexdigest() == served.sha256
    assert _leftovers(tmp_path) == ["file.json.gz"]
    assert [r.range for r in fake.file_requests(GID)] == [None]
    assert refreshed == []


async def test_a_dropped_connection_resumes_with_range(fake: FakeAsana, tmp_path: Path) -> None:
    served = fake.serve_file(GID, SIZE)
    fake.file_fault(GID, drop_after=1_500_000)
    received, _ = await _archive(fake, tmp_path)
    assert received.sha256 == served.sha256 and received.failures == 1
    first, second = fake.file_requests(GID)
    assert first.sent == 1_500_000 and first.range is None
    assert second.status == 206 and second.range is not None
    assert second.range.startswith("bytes=") and int(second.range[6:-1]) > 0
    assert second.if_range == f'"{served.md5}"'
    assert hashlib.sha256(_stored(tmp_path)).hexdigest() == served.sha256


async def test_a_stall_resumes_too(fake: FakeAsana, tmp_path: Path) -> None:
    served = fake.serve_file(GID, SIZE)
    fake.file_fault(GID, stall_after=700_000, stall_seconds=30)
    received, _ = await _archive(fake, tmp_path)
    assert received.sha256 == served.sha256
    assert [r.status for r in fake.file_requests(GID)] == [200, 206]


async def test_an_expired_link_is_refreshed_and_the_download_resumes(
    fake: FakeAsana, tmp_path: Path
) -> None:
    served = fake.serve_file(GID, SIZE)
    fake.file_fault(GID, stall_after=2_500_000, stall_seconds=30)
    # Once a first MiB is in, every link minted so far dies: the resume meets a 403.
    received, refreshed = await _archive(
        fake, tmp_path, progress_hook=lambda done: fake.expire_links(GID)
    )
    assert received.sha256 == served.sha256
    statuses = [(r.status, r.expired) for r in fake.file_requests(GID)]
    assert statuses == [(200, False), (403, True), (206, False)]
    assert refreshed == [1]


async def test_a_server_ignoring_range_makes_it_start_over(fake: FakeAsana, tmp_path: Path) -> None:
    served = fake.serve_file(GID, SIZE)
    fake.file_fault(GID, drop_after=1_200_000)
    fake.file_fault(GID, ignore_range=True)
    received, _ = await _archive(fake, tmp_path)
    assert received.sha256 == served.sha256 and received.restarts == 1
    assert [r.status for r in fake.file_requests(GID)] == [200, 200, 200]
    assert hashlib.sha256(_stored(tmp_path)).hexdigest() == served.sha256
    assert _leftovers(tmp_path) == ["file.json.gz"]


async def test_corrupted_bytes_are_caught_and_fetched_again(
    fake: FakeAsana, tmp_path: Path
) -> None:
    served = fake.serve_file(GID, SIZE)
    fake.file_fault(GID, corrupt_at=2_000_000)
    received, _ = await _archive(fake, tmp_path)
    assert received.sha256 == served.sha256 and received.restarts == 1
    assert hashlib.sha256(_stored(tmp_path)).hexdigest() == served.sha256


async def test_attempts_are_bounded_and_no_partial_object_is_left(
    fake: FakeAsana, tmp_path: Path
) -> None:
    fake.serve_file(GID, SIZE)
    fake.file_fault(GID, corrupt_at=10, times=3)
    with pytest.raises(TransferFailed) as failed:
        await _archive(fake, tmp_path, attempts=3)
    assert "MD5 does not match" in failed.value.reason
    assert "gave up after 3 attempts" in failed.value.reason
    assert _leftovers(tmp_path) == []  # obstore aborted: not even its staging file


async def test_a_drop_without_etag_still_checks_size(fake: FakeAsana, tmp_path: Path) -> None:
    served = fake.serve_file(GID, SIZE, etag=False)
    fake.file_fault(GID, drop_after=900_000)
    received, _ = await _archive(fake, tmp_path)
    assert received.sha256 == served.sha256
    assert fake.file_requests(GID)[1].if_range == "Sun, 29 Nov 2026 03:00:00 GMT"
