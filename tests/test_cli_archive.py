"""`asana-export-bot archive GID` and doctor's archive check, run as a user runs them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bot.demo.fake_asana import DEFAULT_ORGANIZATION_GID as ORG
from bot.demo.fake_asana import FakeAsana
from tests.conftest import ASANA_TOKEN
from tests.test_cli import run_cli

GID = "1200000000000078"
CREATED = "2026-11-20T10:00:00.000Z"


@pytest.fixture
def archive_env(fake_asana: FakeAsana, tmp_path: Path) -> dict[str, str]:
    return {
        "ASANA_TOKEN": ASANA_TOKEN,
        "ASANA_BASE_URL": fake_asana.base_url,
        "ASANA_MAX_RETRY_SECONDS": "1",
        "ARCHIVE_URL": f"file://{tmp_path / 'archive'}",
        "ARCHIVE_RETRY_SECONDS": "0",
        "ARCHIVE_STALL_SECONDS": "2",
    }


def test_archive_by_hand_stores_the_file_and_its_manifest(
    fake_asana: FakeAsana, archive_env: dict[str, str], tmp_path: Path
) -> None:
    fake_asana.set_export(GID, "finished", created_at=CREATED)
    served = fake_asana.serve_file(GID, 1_500_000)
    fake_asana.file_fault(GID, drop_after=400_000)  # resumed, as the job would
    result = run_cli(["archive", GID, "--json"], archive_env, tmp_path)
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    path = tmp_path / "archive" / ORG / f"2026-11-20-{GID}.json.gz"
    assert facts == {
        "gid": GID,
        "location": f"file://{tmp_path / 'archive'}/{ORG}/2026-11-20-{GID}.json.gz",
        "size": 1_500_000,
        "sha256": served.sha256,
        "removed": [],
    }
    assert hashlib.sha256(path.read_bytes()).hexdigest() == served.sha256
    assert json.loads(path.with_name(f"2026-11-20-{GID}.manifest.json").read_text())["gid"] == GID
    assert "/files/" not in result.stdout + result.stderr, "never the link"

    text = run_cli(["archive", GID], archive_env, tmp_path)
    assert text.returncode == 0 and f"sha256        {served.sha256}" in text.stdout


@pytest.mark.parametrize(
    ("setup", "code", "error"),
    [
        ("pending", 2, "not_finished"),
        ("missing", 3, "not_found"),
        ("corrupt", 5, "transfer_failed"),
        ("no_url", 78, "configuration"),
        ("bad_gid", 2, "bad_input"),
    ],
)
def test_archive_exit_codes_follow_checks(
    fake_asana: FakeAsana,
    archive_env: dict[str, str],
    tmp_path: Path,
    setup: str,
    code: int,
    error: str,
) -> None:
    gid = GID
    env = dict(archive_env)
    if setup == "pending":
        fake_asana.set_export(GID, "pending")
    elif setup == "corrupt":
        fake_asana.set_export(GID, "finished")
        fake_asana.serve_file(GID, 100_000)
        fake_asana.file_fault(GID, corrupt_at=5, times=10)
        env["ARCHIVE_ATTEMPTS"] = "2"
    elif setup == "no_url":
        env["ARCHIVE_URL"] = ""
    elif setup == "bad_gid":
        gid = "12ab"
    result = run_cli(["archive", gid, "--json"], env, tmp_path)
    assert result.returncode == code, result.stdout + result.stderr
    assert json.loads(result.stdout)["error"] == error
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "archive").rglob("*.json.gz*")) if setup == "corrupt" else True
