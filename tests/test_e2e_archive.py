"""Archiving finished exports, in process: the watcher queues it, the archive job streams it into
a local directory, the channels see progress, where it landed, or one failure post."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.archive.records import ArchiveState
from bot.demo.fake_asana import DEFAULT_ORGANIZATION_GID as ORG
from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.testing import (
    FAST_WATCH,
    BotProcess,
    async_wait_until,
    command,
    finished_posts,
    posts,
    text_of,
)
from bot.testing.scenario import Scenario
from tests.conftest import StartScenario

GID = "1200000000000901"
SIZE = 2 * 1024 * 1024 + 777
CREATED = "2026-11-28T23:10:00.000Z"


def _settings(root: Path, **extra: str) -> dict[str, str]:
    return {
        "LINK_POLICY": "anywhere",
        "ARCHIVE_URL": f"file://{root}",
        "ARCHIVE_RETRY_SECONDS": "0",
        "ARCHIVE_STALL_SECONDS": "1",
        **extra,
    }


def card_updates(slack: FakeSlack, channel: str) -> list[dict[str, Any]]:
    return [c.body for c in slack.calls_to("chat.update") if c.ok and c.body["channel"] == channel]


def replies(slack: FakeSlack, channel: str) -> list[dict[str, Any]]:
    return [p for p in posts(slack, channel) if "archived at" in p["text"]]


def finished_ts(slack: FakeSlack, channel: str) -> str:
    """The ts Slack gave the finished post in `channel`."""
    (call,) = [
        c
        for c in slack.calls_to("chat.postMessage")
        if c.ok and c.body.get("channel") == channel and c.body.get("metadata")
    ]
    assert call.response is not None
    return str(call.response["ts"])


def failure_posts(slack: FakeSlack, channel: str | None = None) -> list[dict[str, Any]]:
    return [p for p in posts(slack, channel) if "could not be archived" in p["text"]]


async def _finish(bot: Scenario, asana: FakeAsana, slack: FakeSlack, *channels: str) -> None:
    """Watch GID in `channels`, let it finish, and wait for every finished post."""
    asana.set_export(GID, "started", created_at=CREATED, organization_name="Acme")
    asana.script(GID, ["started", "finished"], advance="manual")
    for channel in channels:
        assert "Watching" in (await bot.command(GID, channel=channel))["text"]
    asana.advance(GID)
    await bot.run_until(lambda: len(finished_posts(slack)) == len(channels))


def _stored(root: Path) -> list[str]:
    folder = root / ORG
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


async def test_a_finished_export_is_archived_once_with_progress_and_a_thread_reply(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    bot = await start_scenario(**_settings(root))
    await _finish(bot, fake_asana, fake_slack, "C0001")
    served = fake_asana.serve_file(GID, SIZE)
    assert await bot.archive() == 1
    assert await bot.archive() == 0, "one archive per export"
    assert _stored(root) == [f"2026-11-28-{GID}.json.gz", f"2026-11-28-{GID}.manifest.json"]
    data = (root / ORG / f"2026-11-28-{GID}.json.gz").read_bytes()
    assert hashlib.sha256(data).hexdigest() == served.sha256
    manifest = json.loads((root / ORG / f"2026-11-28-{GID}.manifest.json").read_text())
    assert manifest["gid"] == GID and manifest["size"] == SIZE
    assert manifest["sha256"] == served.sha256
    assert manifest["organization"] == {"gid": ORG, "name": "Acme"}
    assert manifest["created_at"].startswith("2026-11-28T23:10")
    assert manifest["archived_at"] and manifest["bot_version"]

    (reply,) = replies(fake_slack, "C0001")
    assert reply["thread_ts"] == finished_ts(fake_slack, "C0001"), "in the finished post's thread"
    location = f"file://{root}/{ORG}/2026-11-28-{GID}.json.gz"
    assert location in reply["text"] and "2.1 MB" in reply["text"]
    assert served.sha256 in text_of(reply)
    assert "X-Amz" not in text_of(reply), "a storage location, never a link"
    shown = [json.dumps(u["blocks"], ensure_ascii=False) for u in card_updates(fake_slack, "C0001")]
    assert any("Archiving… 0 B of 2.1 MB, 0%" in t for t in shown), "progress on the card"
    assert f"Archived to `{location}`" in shown[-1]
    row = await bot.archiver.records.get(GID)
    assert row is not None and row.state is ArchiveState.DONE and row.sha256 == served.sha256
    (recent,) = await bot.archiver.records.recent()
    assert recent.location == location and recent.size == SIZE
    assert any("export %s archived to" in r.msg for r in bot.records)
    assert bot.tracebacks == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_two_channels_and_two_replicas_make_one_archive(
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    start_scenario: StartScenario,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    backend: str,
) -> None:
    url = request.getfixturevalue("fresh_postgres_url") if backend == "postgresql" else None
    root = tmp_path / "archive"
    first = await start_scenario(url, **_settings(root))
    second = await start_scenario(url, **_settings(root))
    await _finish(first, fake_asana, fake_slack, "C1", "C2")
    await second.run_until(lambda: True)  # the second replica polls too: still one queue row
    served = fake_asana.serve_file(GID, SIZE)
    ran = await asyncio.gather(first.archive(), second.archive(), first.archive())
    assert sum(ran) == 1, "one replica claims it"
    assert [r.status for r in fake_asana.file_requests(GID)] == [200]
    assert _stored(root) == [f"2026-11-28-{GID}.json.gz", f"2026-11-28-{GID}.manifest.json"]
    assert len(replies(fake_slack, "C1")) == len(replies(fake_slack, "C2")) == 1
    assert served.sha256 in text_of(replies(fake_slack, "C2")[0])


async def test_a_dropped_download_and_an_expired_link_resume_through_asana(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    bot = await start_scenario(**_settings(root))
    await _finish(bot, fake_asana, fake_slack, "C0001")
    served = fake_asana.serve_file(GID, SIZE)
    fake_asana.file_fault(GID, drop_after=600_000)
    fake_asana.file_fault(GID, stall_after=400_000, stall_seconds=30)
    gets_before = len([r for r in fake_asana.requests_for(GID) if r.method == "GET"])
    job = asyncio.create_task(bot.archive())
    # The second answer stalls: while it does, every link minted so far dies.
    await async_wait_until(lambda: len(fake_asana.file_requests(GID)) >= 2, timeout=10)
    fake_asana.expire_links(GID)
    assert await job == 1
    answers = [(r.status, r.expired, r.range is not None) for r in fake_asana.file_requests(GID)]
    assert answers == [
        (200, False, False),
        (206, False, True),
        (403, True, True),
        (206, False, True),
    ]
    gets = [r for r in fake_asana.requests_for(GID) if r.method == "GET"]
    assert len(gets) == gets_before + 2, "one GET to start, one for a fresh link"
    data = (root / ORG / f"2026-11-28-{GID}.json.gz").read_bytes()
    assert hashlib.sha256(data).hexdigest() == served.sha256
    assert len(replies(fake_slack, "C0001")) == 1 and failure_posts(fake_slack) == []


async def test_bounded_attempts_then_one_failure_post_and_no_object(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    bot = await start_scenario(**_settings(root, ARCHIVE_ATTEMPTS="3"))
    await _finish(bot, fake_asana, fake_slack, "C1", "C2")
    fake_asana.serve_file(GID, SIZE)
    fake_asana.file_fault(GID, corrupt_at=1_000, times=10)
    assert await bot.archive() == 1
    await bot.ticks(3)
    assert await bot.archive() == 0
    assert len(fake_asana.file_requests(GID)) == 3, "ARCHIVE_ATTEMPTS downloads"
    for channel in ("C1", "C2"):
        (failed,) = failure_posts(fake_slack, channel)
        assert "MD5 does not match" in failed["text"]
        assert failed["thread_ts"] == finished_ts(fake_slack, channel)
        assert len(finished_posts(fake_slack, channel)) == 1, "the export is still announced"
    assert _stored(root) == [], "no partial object, no staging file"
    row = await bot.archiver.records.get(GID)
    assert row is not None and row.state is ArchiveState.FAILED


async def test_retention_keeps_the_newest_and_never_touches_foreign_objects(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    folder = root / ORG
    folder.mkdir(parents=True)
    older = ["2026-10-01-1200000000000100", "2026-11-01-1200000000000200"]
    for stem in older:
        (folder / f"{stem}.json.gz").write_bytes(b"old")
        (folder / f"{stem}.manifest.json").write_text("{}")
    foreign = ["notes.txt", "2026-01-01-report.json.gz", "2025-01-01-12.zip.bak~", "keep-me.gz"]
    for name in foreign:
        (folder / name).write_bytes(b"not ours")
    (root / "1100000000000999").mkdir()
    (root / "1100000000000999" / "2020-01-01-1.json.gz").write_bytes(b"other organization")
    bot = await start_scenario(**_settings(root, ARCHIVE_KEEP="2"))
    await _finish(bot, fake_asana, fake_slack, "C0001")
    fake_asana.serve_file(GID, 50_000)
    assert await bot.archive() == 1
    assert _stored(root) == sorted(
        [
            *foreign,
            f"{older[1]}.json.gz",
            f"{older[1]}.manifest.json",
            f"2026-11-28-{GID}.json.gz",
            f"2026-11-28-{GID}.manifest.json",
        ]
    )
    assert (root / "1100000000000999" / "2020-01-01-1.json.gz").exists()


async def test_download_links_reach_neither_logs_nor_database(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    bot = await start_scenario(**_settings(root))
    await _finish(bot, fake_asana, fake_slack, "C0001")
    fake_asana.serve_file(GID, SIZE)
    fake_asana.file_fault(GID, drop_after=300_000)
    fake_asana.file_fault(GID, status=403)  # a dead link: a fresh one is fetched
    assert await bot.archive() == 1
    assert len(replies(fake_slack, "C0001")) == 1
    links = [u for u in fake_asana.download_urls(GID) if "/files/" in u]
    assert len(links) >= 2
    logs = bot.logs()
    with closing(sqlite3.connect(tmp_path / "bot.db")) as db:
        dump = "\n".join(db.iterdump())
    for link in links:
        signature = link.split("X-Amz-Signature=")[1].split("&")[0]
        for where in (logs, dump):
            assert signature not in where and "/files/" not in where


@pytest.mark.parametrize("archive_url", ["", None])
async def test_archiving_off_queues_nothing(
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    start_scenario: StartScenario,
    archive_url: str | None,
) -> None:
    extra = {"ARCHIVE_URL": archive_url} if archive_url is not None else {}
    bot = await start_scenario(LINK_POLICY="anywhere", **extra)
    await _finish(bot, fake_asana, fake_slack, "C0001")
    assert await bot.archive() == 0
    assert await bot.archiver.records.recent() == []


async def test_a_dead_replicas_archive_is_taken_over_after_its_lease(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    bot = await start_scenario(**_settings(root, ARCHIVE_ATTEMPTS="3"))
    await _finish(bot, fake_asana, fake_slack, "C0001")
    served = fake_asana.serve_file(GID, SIZE)
    records = bot.archiver.records
    lease = bot.settings.LEASE_SECONDS
    # A replica claimed it and died mid-stream, leaving a local store's staging file.
    dead = await records.claim(
        owner="dead-replica", now=bot.clock(), lease=timedelta(seconds=lease), max_runs=3
    )
    assert dead is not None and dead.gid == GID
    (root / ORG).mkdir(parents=True)
    staging = root / ORG / f"2026-11-28-{GID}.json.gz#1"
    staging.write_bytes(b"half an export")
    assert await bot.archive() == 0, "its lease still holds"
    assert await bot.archive(after=lease + 1) == 1
    assert not staging.exists(), "the leftover is removed by the replica that takes over"
    assert _stored(root) == [f"2026-11-28-{GID}.json.gz", f"2026-11-28-{GID}.manifest.json"]
    data = (root / ORG / f"2026-11-28-{GID}.json.gz").read_bytes()
    assert hashlib.sha256(data).hexdigest() == served.sha256
    row = await records.get(GID)
    assert row is not None and row.state is ArchiveState.DONE and row.runs == 2
    assert len(replies(fake_slack, "C0001")) == 1


async def test_replicas_that_keep_dying_end_in_one_failure_post(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario, tmp_path: Path
) -> None:
    bot = await start_scenario(**_settings(tmp_path / "archive", ARCHIVE_ATTEMPTS="2"))
    await _finish(bot, fake_asana, fake_slack, "C0001")
    lease = timedelta(seconds=bot.settings.LEASE_SECONDS)
    for _ in range(2):
        bot.clock.advance(lease.total_seconds() + 1)
        assert await bot.archiver.records.claim(
            owner="dead", now=bot.clock(), lease=lease, max_runs=2
        )
    assert await bot.archive(after=lease.total_seconds() + 1) == 0
    assert await bot.archive(after=1) == 0
    (failed,) = failure_posts(fake_slack, "C0001")
    assert "stopped 2 times" in failed["text"]


async def test_shutdown_aborts_the_upload_and_gives_the_lease_back(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    bot = await start_scenario(**_settings(root, ARCHIVE_STALL_SECONDS="30"))
    await _finish(bot, fake_asana, fake_slack, "C0001")
    fake_asana.serve_file(GID, 8 * 1024 * 1024)
    fake_asana.file_fault(GID, stall_after=3 * 1024 * 1024, stall_seconds=5)
    job = asyncio.create_task(bot.archive())
    await async_wait_until(lambda: fake_asana.file_requests(GID), timeout=10)
    await bot.archiver.stop(grace=20)
    assert await job == 1
    row = await bot.archiver.records.get(GID)
    assert row is not None and row.state is ArchiveState.QUEUED and row.lease_owner is None
    assert row.runs == 0, "a shutdown does not count as a run"
    assert _stored(root) == [], "no object, no staging file"
    assert failure_posts(fake_slack) == [] and replies(fake_slack, "C0001") == []


# ------------------------------------------------------------------------------ real process


def test_a_real_bot_process_archives_what_it_watched(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot_env: dict[str, str], tmp_path: Path
) -> None:
    """The wiring: `run` schedules the archive job, which streams while the process serves;
    SIGTERM afterwards still exits 0 (obstore's threads included), and no link is logged."""
    root = tmp_path / "archive"
    env = {**bot_env, **FAST_WATCH, **_settings(root)}
    fake_asana.set_export(GID, "started", created_at=CREATED)
    served = fake_asana.serve_file(GID, SIZE)
    bot = BotProcess(tmp_path, env).start()
    try:
        command(bot, fake_slack, GID)
        fake_asana.set_state(GID, "finished")
        fake_slack.wait_for(lambda: replies(fake_slack, "C0001"), timeout=30)
        assert bot.stop() == 0
    finally:
        bot.stop()
    data = (root / ORG / f"2026-11-28-{GID}.json.gz").read_bytes()
    assert hashlib.sha256(data).hexdigest() == served.sha256
    logs = bot.logs()
    assert "Traceback" not in logs and f"export {GID} archived to file://" in logs
    for link in fake_asana.download_urls(GID):
        assert link.split("X-Amz-Signature=")[1].split("&")[0] not in logs


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_run_postponed_or_stopped_is_not_counted(
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    start_scenario: StartScenario,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    backend: str,
) -> None:
    url = request.getfixturevalue("fresh_postgres_url") if backend == "postgresql" else None
    bot = await start_scenario(url, **_settings(tmp_path / "archive", ARCHIVE_ATTEMPTS="2"))
    await _finish(bot, fake_asana, fake_slack, "C0001")
    fake_asana.fail(503, gid=GID, times=20)  # Asana down whenever the job asks
    for _ in range(4):
        assert await bot.archive() == 1
    row = await bot.archiver.records.get(GID)
    assert row is not None and row.state is ArchiveState.QUEUED and row.runs == 0
    assert row.lease_owner is None and failure_posts(fake_slack) == []
