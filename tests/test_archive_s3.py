"""Archiving to S3: the export's file from the fake Asana's link into moto's S3 server, by the
bot's own archive (`bot.archive.run.archive_export`) over real HTTP on both sides.

The store is reached only through ARCHIVE_URL and the standard AWS_* variables, as in a
deployment. Every test ends by asking S3 for in-progress multipart uploads: none may be left.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import httpx
import pytest

from bot.archive.run import Archived, ArchiveRequest, archive_export
from bot.archive.storage import ArchiveStorage
from bot.archive.transfer import TransferConfig, TransferFailed
from bot.asana import AsanaClient
from bot.demo.fake_asana import FakeAsana
from bot.testing import TEST_ASANA_TOKEN
from bot.testing.moto_server import Bucket

MIB = 1024 * 1024
GID = "1200000000000812"
ORG = "1100000000000001"
CREATED = "2026-11-29T02:59:00.000Z"
SIZE = 12 * MIB + 4321  # three 5 MiB parts, the last one short
PREFIX = "backups/asana"
NOW = datetime(2026, 11, 29, 3, 0, 5, tzinfo=UTC)

Archive = Callable[..., Awaitable[Archived]]


@pytest.fixture
def s3_env(s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """This process reaches the bucket as the bot does: the AWS_* variables, nothing else."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in s3_bucket.env().items():
        monkeypatch.setenv(name, value)
    return s3_bucket


@pytest.fixture
async def archive(fake_asana: FakeAsana, s3_env: Bucket) -> AsyncIterator[Archive]:
    """`await archive(keep=0, attempts=5)`: archive export GID once, as the bot's job does."""
    fake_asana.set_export(GID, "finished", organization_gid=ORG, created_at=CREATED)
    async with (
        AsanaClient(TEST_ASANA_TOKEN, fake_asana.base_url) as asana,
        httpx.AsyncHTTPTransport() as wire,
    ):

        async def refresh() -> str:
            return str((await asana.get_export(GID)).download_url)

        async def run(*, keep: int = 0, attempts: int = 5) -> Archived:
            storage = ArchiveStorage(s3_env.url(PREFIX), part_size=5 * MIB, concurrency=2)
            request = ArchiveRequest(
                export=await asana.get_export(GID),
                refresh=refresh,
                storage=storage,
                transport=wire,
                config=TransferConfig(max_attempts=attempts, retry_initial=0, stall_seconds=2),
                keep=keep,
                bot_version="9.9.9-test",
            )

            async def progress(done: int, total: int | None) -> None:
                return None

            return await archive_export(request, progress, now=NOW)

        yield run


def _key(gid: str = GID, date: str = "2026-11-29", org: str = ORG, ext: str = ".json.gz") -> str:
    return f"{PREFIX}/{org}/{date}-{gid}{ext}"


def _manifest_key(gid: str = GID, date: str = "2026-11-29", org: str = ORG) -> str:
    return f"{PREFIX}/{org}/{date}-{gid}.manifest.json"


async def test_the_file_and_its_manifest_land_whole_in_s3(
    archive: Archive, fake_asana: FakeAsana, s3_env: Bucket
) -> None:
    served = fake_asana.serve_file(GID, SIZE)

    done = await archive()

    assert s3_env.objects() == {_key(): SIZE, _manifest_key(): s3_env.objects()[_manifest_key()]}
    assert hashlib.sha256(s3_env.read(_key())).hexdigest() == served.sha256
    manifest = json.loads(s3_env.read(_manifest_key()))
    assert manifest["gid"] == GID
    assert manifest["organization"]["gid"] == ORG
    assert manifest["created_at"].startswith("2026-11-29T02:59:00")
    assert (manifest["size"], manifest["sha256"]) == (SIZE, served.sha256)
    assert manifest["archived_at"].startswith("2026-11-29T03:00:05")
    assert manifest["bot_version"] == "9.9.9-test"
    assert (done.size, done.sha256) == (SIZE, served.sha256)
    assert done.location == f"s3://{s3_env.name}/{_key()}"  # a location, never a link
    assert "X-Amz-Signature" not in json.dumps(manifest)
    assert s3_env.uploads() == []


async def test_a_drop_mid_stream_resumes_into_the_same_upload(
    archive: Archive, fake_asana: FakeAsana, s3_env: Bucket
) -> None:
    served = fake_asana.serve_file(GID, SIZE)
    fake_asana.file_fault(GID, drop_after=7 * MIB)

    done = await archive()

    assert hashlib.sha256(s3_env.read(_key())).hexdigest() == served.sha256
    assert done.failures == 1 and done.restarts == 0
    assert [r.range for r in fake_asana.file_requests(GID)] == [None, f"bytes={7 * MIB}-"]
    assert s3_env.uploads() == []


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"drop_after": 3 * MIB, "times": 5}, id="drops-every-time"),
        pytest.param({"corrupt_at": 11 * MIB, "times": 5}, id="checksum-mismatch"),
    ],
)
async def test_a_failed_archive_leaves_no_object_and_no_upload(
    archive: Archive, fake_asana: FakeAsana, s3_env: Bucket, fault: dict[str, int]
) -> None:
    """5 MiB parts were already in S3 when the last attempt failed: all of it is aborted."""
    fake_asana.serve_file(GID, SIZE)
    fake_asana.file_fault(GID, **fault)

    with pytest.raises(TransferFailed):
        await archive(attempts=2)

    assert s3_env.objects() == {}
    assert s3_env.uploads() == []
    assert sum(r.sent for r in fake_asana.file_requests(GID)) > 5 * MIB  # a part was sent


async def test_what_a_killed_replica_left_is_aborted_before_the_new_upload(
    archive: Archive, fake_asana: FakeAsana, s3_env: Bucket
) -> None:
    served = fake_asana.serve_file(GID, SIZE)
    left = s3_env.start_upload(_key(), b"p" * (5 * MIB))
    other = s3_env.start_upload(_key(gid="1200000000000999"), b"q" * (5 * MIB))

    await archive()

    assert hashlib.sha256(s3_env.read(_key())).hexdigest() == served.sha256
    assert s3_env.uploads() == [other]
    assert left not in s3_env.uploads()


async def test_retention_keeps_the_newest_and_never_touches_foreign_objects(
    archive: Archive, fake_asana: FakeAsana, s3_env: Bucket
) -> None:
    fake_asana.serve_file(GID, 6 * MIB)
    ours_older = [
        (_key("1200000000000101", "2026-11-01"), _manifest_key("1200000000000101", "2026-11-01")),
        (_key("1200000000000102", "2026-11-08"), _manifest_key("1200000000000102", "2026-11-08")),
        (_key("1200000000000103", "2026-11-15"), _manifest_key("1200000000000103", "2026-11-15")),
    ]
    for key, manifest in ours_older:
        s3_env.put(key, b"old archive")
        s3_env.put(manifest, b"{}")
    foreign = [
        f"{PREFIX}/{ORG}/notes.txt",
        f"{PREFIX}/{ORG}/2026-01-01-1200000000000001.json.gz.bak#1",
        f"{PREFIX}/{ORG}/copy of 2026-01-01-1200000000000001.json.gz",
        _key("1200000000000050", "2026-01-01", org="1100000000000002"),  # another organization
        f"elsewhere/{ORG}/2026-01-01-1200000000000002.json.gz",
    ]
    for key in foreign:
        s3_env.put(key, b"not ours to delete")

    done = await archive(keep=2)

    kept = set(s3_env.objects())
    assert kept == {
        _key(),
        _manifest_key(),
        *ours_older[2],  # the newest older one: two archives are kept
        *foreign,
    }
    assert set(done.removed) == {
        p.removeprefix(PREFIX + "/") for pair in ours_older[:2] for p in pair
    }
    assert s3_env.uploads() == []


def test_object_store_requests_may_take_minutes(s3_env: Bucket) -> None:
    """obstore's default (30 s for a whole request) fails a large CompleteMultipartUpload, which
    S3 may take minutes over; a client option replaces the environment's, so allow_http stays."""
    options = ArchiveStorage(s3_env.url(PREFIX))._store.client_options

    assert options["timeout"] == "5 minutes"
    assert options["allow_http"] == "true"  # moto's endpoint is http://
