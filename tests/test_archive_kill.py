"""The replica that is archiving is SIGKILLed mid-stream; another one finishes, exactly once.

Three real `asana-export-bot run` processes share one fresh PostgreSQL database, one fake Asana,
one fake Slack and one S3 bucket (moto's server). A channel watches an export; it finishes; one
replica claims its archive and streams it to S3. The fake Asana stalls that download halfway, so
the kill is aimed: by then S3 holds parts of an unfinished multipart upload. The replica named
in the archive's lease is SIGKILLed; after the lease expires another replica claims the archive,
removes what the dead one left and streams the file again.

At the end: one complete object (its bytes the export's), its manifest, no partial object, no
multipart upload left in progress, and one "archived" reply in the finished post's thread.
Needs PostgreSQL (`ASANA_BOT_TEST_POSTGRES_URL`): skipped with the reason otherwise.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.testing import BotProcess, command, finished_posts, posts, wait_until
from bot.testing.moto_server import Bucket
from bot.testing.slack_view import FINISHED_EVENT

MIB = 1024 * 1024
GID = "1200000000000913"
ORG = "1100000000000001"
CREATED = "2026-11-29T03:00:00.000Z"
SIZE = 24 * MIB + 999
STALL_AFTER = 13 * MIB  # two 5 MiB parts are in S3 by then
PREFIX = "nightly"
KEY = f"{PREFIX}/{ORG}/2026-11-29-{GID}.json.gz"
MANIFEST = f"{PREFIX}/{ORG}/2026-11-29-{GID}.manifest.json"
CHANNEL = "CARCHIVE1"
REPLICAS = 3


@pytest.fixture
def processes() -> Iterator[list[BotProcess]]:
    """Every replica the test starts; SIGKILLed at the end whatever happened."""
    started: list[BotProcess] = []
    yield started
    for process in started:
        process.kill()


def _env(bot_env: dict[str, str], database_url: str, bucket: Bucket) -> dict[str, str]:
    return {
        **bot_env,
        **bucket.env(),
        "DATABASE_URL": database_url,
        "LINK_POLICY": "anywhere",
        "TICK_SECONDS": "0.2",
        "RECOVER_SECONDS": "0.5",
        "POLL_INITIAL_SECONDS": "0.5",
        "POLL_MAX_SECONDS": "1",
        "POLL_JITTER": "0",
        "NOTIFY_GRACE_SECONDS": "2",
        "LEASE_SECONDS": "5",  # the smallest the settings accept: the takeover comes soon
        "ARCHIVE_URL": bucket.url(PREFIX),
        "ARCHIVE_PART_MB": "5",
        "ARCHIVE_CONCURRENCY": "2",
        "ARCHIVE_RETRY_SECONDS": "0",
        "ARCHIVE_STALL_SECONDS": "60",  # the stalled replica is still streaming when killed
        "LOG_LEVEL": "INFO",
    }


def _healthy(process: BotProcess) -> bool:
    assert process.proc is not None
    if process.proc.poll() is not None:
        raise AssertionError(f"replica exited {process.proc.returncode}:\n{process.logs()}")
    try:
        return httpx.get(process.health_url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def _archive_row(engine: sa.Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT state, runs, lease_owner, location, size, sha256 FROM archives")
        ).one_or_none()


def _owner(processes: list[BotProcess], lease_owner: str) -> BotProcess:
    """The replica named in a lease (`host:pid:random`)."""
    pid = int(lease_owner.split(":")[-2])
    (process,) = [p for p in processes if p.proc is not None and p.proc.pid == pid]
    return process


def finished_ts(slack: FakeSlack) -> str:
    """The ts Slack gave the finished post (the thread the archived reply belongs in)."""
    (call,) = [
        c
        for c in slack.calls_to("chat.postMessage")
        if c.ok
        and c.body.get("channel") == CHANNEL
        and (c.body.get("metadata") or {}).get("event_type") == FINISHED_EVENT
    ]
    assert call.response is not None
    return str(call.response["ts"])


def _archived_replies(slack: FakeSlack) -> list[dict[str, Any]]:
    return [p for p in posts(slack, CHANNEL) if "is archived at" in p["text"]]


@pytest.mark.timeout(120)
def test_the_archiving_replica_killed_mid_stream_leaves_one_whole_object_and_no_upload(
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    bot_env: dict[str, str],
    fresh_postgres_url: str,
    s3_bucket: Bucket,
    processes: list[BotProcess],
    tmp_path: Path,
) -> None:
    env = _env(bot_env, fresh_postgres_url, s3_bucket)
    for i in range(REPLICAS):  # started side by side: each takes seconds on a busy machine
        processes.append(BotProcess(tmp_path, {**env, "PORT": ""}, name=f"replica{i}").launch())
    for process in processes:
        wait_until(lambda p=process: _healthy(p), 40, f"{process.log_path.name} serves")
    fake_asana.set_export(GID, "started", organization_gid=ORG, created_at=CREATED)
    served = fake_asana.serve_file(GID, SIZE)
    fake_asana.file_fault(GID, stall_after=STALL_AFTER, stall_seconds=15)  # the first download
    engine = sa.create_engine(fresh_postgres_url, poolclass=sa.pool.NullPool)
    try:
        assert "Watching" in command(processes[0], fake_slack, GID, channel=CHANNEL)["text"]
        fake_asana.set_state(GID, "finished")

        # Aim: a replica holds the archive's lease and S3 holds parts of its upload.
        wait_until(lambda: s3_bucket.uploads(), 40, "a multipart upload in progress")
        row = wait_until(
            lambda: (r := _archive_row(engine)) is not None and r.state == "running" and r,
            10,
            "the archive is running",
        )
        wait_until(
            lambda: any(r.sent >= STALL_AFTER for r in fake_asana.file_requests(GID)),
            20,
            "the download stalled halfway",
        )
        victim = _owner(processes, row.lease_owner)
        (stale_upload,) = s3_bucket.uploads()
        victim.kill()

        # Another replica takes over after the lease, and finishes.
        done = wait_until(
            lambda: (r := _archive_row(engine)) is not None and r.state == "done" and r,
            60,
            "another replica archived it",
        )
        wait_until(lambda: _archived_replies(fake_slack), 15, "the archived reply")
    finally:
        engine.dispose()
    survivors = [p for p in processes if p is not victim]

    # One complete object with its manifest, nothing partial, no upload left in progress.
    objects = s3_bucket.objects()
    assert set(objects) == {KEY, MANIFEST}, objects
    assert objects[KEY] == SIZE
    assert hashlib.sha256(s3_bucket.read(KEY)).hexdigest() == served.sha256
    manifest = json.loads(s3_bucket.read(MANIFEST))
    assert (manifest["size"], manifest["sha256"]) == (SIZE, served.sha256)
    assert s3_bucket.uploads() == [], f"orphaned multipart upload (the killed one: {stale_upload})"

    # The database says so, and the survivor that did it holds no lease.
    assert (done.location, done.size, done.sha256) == (
        f"s3://{s3_bucket.name}/{KEY}",
        SIZE,
        served.sha256,
    )
    assert done.runs == 2  # the killed run, then the one that finished

    # Slack: one finished post, one "archived" reply in its thread.
    assert len(finished_posts(fake_slack, CHANNEL)) == 1
    (reply,) = _archived_replies(fake_slack)
    assert reply.get("thread_ts") == finished_ts(fake_slack), reply
    assert served.sha256 in json.dumps(reply)
    assert f"s3://{s3_bucket.name}/{KEY}" in reply["text"]
    for process in survivors:
        assert "Traceback" not in process.logs(), process.logs()[-3000:]
