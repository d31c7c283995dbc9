"""`asana-export-bot check` and start-up errors, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.botproc import console_script
from tests.conftest import ASANA_TOKEN
from tests.fakes.asana import FakeAsana

GID = "1200000000000077"
_SETTINGS = (
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "ASANA_TOKEN",
    "ASANA_BASE_URL",
    "DATABASE_URL",
    "PORT",
    "LOG_LEVEL",
)


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in _SETTINGS}
    return subprocess.run(
        [console_script(), *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def asana_env(fake_asana: FakeAsana) -> dict[str, str]:
    return {
        "ASANA_TOKEN": ASANA_TOKEN,
        "ASANA_BASE_URL": fake_asana.base_url,
        "ASANA_MAX_RETRY_SECONDS": "1",
    }


def test_check_found_prints_facts(fake_asana: FakeAsana, asana_env, tmp_path: Path) -> None:
    fake_asana.set_export(GID, "finished", organization_gid="9", organization_name="Acme")
    result = run_cli(["check", GID], asana_env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "finished" in result.stdout and "Acme" in result.stdout
    assert "valid until" in result.stdout

    result = run_cli(["check", GID, "--json"], asana_env, tmp_path)
    facts = json.loads(result.stdout)
    assert facts["state"] == "finished" and facts["organization"] == {"gid": "9", "name": "Acme"}
    assert facts["download_url"].startswith("http")


@pytest.mark.parametrize(
    ("setup", "arg", "code"),
    [
        (lambda fake: None, "abc", 2),
        (lambda fake: None, "404040", 3),
        (lambda fake: fake.set_token("another"), GID, 4),
        (lambda fake: fake.fail(403, times=5), GID, 4),
        (lambda fake: fake.fail(402, times=5), GID, 4),
        (lambda fake: fake.fail(503, times=50), GID, 5),
        (lambda fake: fake.fail(429, times=50, retry_after=30), GID, 5),
    ],
)
def test_check_exit_codes(
    fake_asana: FakeAsana, asana_env, tmp_path: Path, setup, arg: str, code: int
) -> None:
    fake_asana.set_export(GID, "pending")
    setup(fake_asana)
    result = run_cli(["check", arg], asana_env, tmp_path)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stderr.startswith("error:")
    assert ASANA_TOKEN not in result.stdout + result.stderr


def test_check_json_error(fake_asana: FakeAsana, asana_env, tmp_path: Path) -> None:
    result = run_cli(["check", "404040", "--json"], asana_env, tmp_path)
    assert result.returncode == 3
    assert json.loads(result.stdout)["error"] == "not_found"


def test_check_without_token_is_a_config_error(tmp_path: Path) -> None:
    result = run_cli(["check", GID], {}, tmp_path)
    assert result.returncode == 78
    assert "ASANA_TOKEN is not set" in result.stderr


def test_run_lists_every_missing_setting_without_secrets(tmp_path: Path) -> None:
    secret = "xoxp-user-token-canary"
    result = run_cli(["run"], {"SLACK_BOT_TOKEN": secret, "PORT": "99999"}, tmp_path)
    assert result.returncode == 78
    problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    names = sorted(line.split()[1] for line in problems)
    assert names == ["PORT"], result.stderr  # a malformed value stops validation first
    result = run_cli(["run"], {"SLACK_BOT_TOKEN": secret}, tmp_path)
    problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert sorted(line.split()[1] for line in problems) == [
        "ASANA_TOKEN",
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
    ]
    assert secret not in result.stderr


def test_version_and_help(tmp_path: Path) -> None:
    assert "asana-export-bot" in run_cli(["--version"], {}, tmp_path).stdout
    assert "check" in run_cli(["--help"], {}, tmp_path).stdout
