"""The S3 test kit (`bot.testing.moto_server`) and the obstore behaviour the archive relies on.

moto runs in server mode on 127.0.0.1; obstore reaches it only through the standard AWS_*
variables, as the bot would reach S3. The kit must see what a crash leaves (an in-progress
multipart upload), or the archive tests' "no orphaned upload" would prove nothing.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.testing import wait_until
from bot.testing.moto_server import Bucket, MotoS3

MIB = 1024 * 1024


def test_the_kit_lists_objects_and_uploads_in_progress(s3_bucket: Bucket) -> None:
    s3_bucket.put("org/a.txt", b"hello")
    upload = s3_bucket.start_upload("org/b.gz", b"x" * (5 * MIB))

    assert s3_bucket.objects() == {"org/a.txt": 5}
    assert s3_bucket.objects("other/") == {}
    assert s3_bucket.read("org/a.txt") == b"hello"
    assert s3_bucket.uploads() == [upload]
    assert s3_bucket.uploads("org/b") == [upload]
    assert s3_bucket.uploads("org/a") == []


def test_each_test_gets_an_empty_bucket(moto_server: MotoS3) -> None:
    first, second = moto_server.new_bucket(), moto_server.new_bucket()
    first.put("k", b"1")

    assert first.name != second.name
    assert second.objects() == {}


@pytest.fixture
def aws_env(s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in s3_bucket.env().items():
        monkeypatch.setenv(name, value)
    return s3_bucket


async def _chunks(
    count: int, *, size: int = MIB, fail_at: int | None = None
) -> AsyncIterator[bytes]:
    for i in range(count):
        if i == fail_at:
            raise RuntimeError("the download dropped")
        yield bytes([i % 251]) * size


async def test_obstore_streams_a_multipart_upload_from_the_environment_alone(
    aws_env: Bucket,
) -> None:
    import obstore
    from obstore.store import from_url

    store = from_url(aws_env.url("archive"))  # endpoint, http and keys: the AWS_* variables
    await obstore.put_async(store, "1100/x.gz", _chunks(12), chunk_size=5 * MIB, max_concurrency=2)

    body = aws_env.read("archive/1100/x.gz")
    assert len(body) == 12 * MIB
    expected = hashlib.sha256(b"".join(bytes([i]) * MIB for i in range(12))).hexdigest()
    assert hashlib.sha256(body).hexdigest() == expected
    assert aws_env.uploads() == []


async def test_obstore_aborts_the_upload_when_the_stream_raises(aws_env: Bucket) -> None:
    """What the archive counts on: a transfer that must stop raises inside its iterator."""
    import obstore
    from obstore.store import from_url

    store = from_url(aws_env.url("archive"))
    with pytest.raises(RuntimeError, match="dropped"):
        await obstore.put_async(
            store, "1100/x.gz", _chunks(14, fail_at=12), chunk_size=5 * MIB, max_concurrency=2
        )

    assert aws_env.objects() == {}
    assert aws_env.uploads() == []


_KILLED_UPLOAD = textwrap.dedent(
    """
    import asyncio, sys
    import obstore
    from obstore.store import from_url

    async def forever():
        print("streaming", flush=True)
        while True:
            await asyncio.sleep(0.01)
            yield b"k" * (1024 * 1024)

    async def main():
        await obstore.put_async(from_url(sys.argv[1]), "1100/killed.gz", forever(),
                                chunk_size=5 * 1024 * 1024, max_concurrency=2)

    asyncio.run(main())
    """
)


def test_a_killed_upload_leaves_an_upload_in_progress_that_the_kit_sees(
    s3_bucket: Bucket, tmp_path: Path
) -> None:
    """SIGKILL gives obstore no chance to abort: this is the leftover a replica that takes an
    archive over must clean up, and what the kill test asserts is gone."""
    script = tmp_path / "upload.py"
    script.write_text(_KILLED_UPLOAD)
    proc = subprocess.Popen(
        [sys.executable, str(script), s3_bucket.url("archive")],
        env={**os.environ, **s3_bucket.env()},
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"streaming"
        wait_until(lambda: s3_bucket.uploads(), 20, "the upload has started")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    assert s3_bucket.objects() == {}
    assert [u.key for u in s3_bucket.uploads()] == ["archive/1100/killed.gz"]
