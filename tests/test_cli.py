"""`asana-export-bot check` and start-up errors, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bot.demo.fake_asana import FakeAsana
from bot.testing.process import console_script
from tests.conftest import ASANA_TOKEN

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
    # A malformed value no longer hides what is missing: one pass reports all of it.
    assert names == ["ASANA_TOKEN", "PORT", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"]
    assert secret not in result.stderr


def test_run_with_a_token_slack_rejects_exits_and_leaves_nothing_open(
    bot_env: dict[str, str], tmp_path: Path
) -> None:
    """It stops half-way through start-up: what it opened (the Slack session, Asana's pool,
    the store's threads) is closed, not reported by asyncio as unclosed ERROR lines."""
    result = run_cli(["run"], {**bot_env, "SLACK_BOT_TOKEN": "xoxb-not-ours"}, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Slack rejected SLACK_BOT_TOKEN (invalid_auth)" in output, output
    assert "Unclosed" not in output and "ERROR" not in output, output
    assert "Traceback" not in output and "xoxb-not-ours" not in output


def test_run_reports_three_kinds_of_problem_in_one_pass(tmp_path: Path) -> None:
    """Malformed, missing and an unusable DATABASE_URL together; Socket Mode needs no secret."""
    password = "db-password-canary"
    env = {
        "SLACK_BOT_TOKEN": "xoxb-1-fine",
        "SLACK_APP_TOKEN": "xapp-1-fine",  # Socket Mode: SLACK_SIGNING_SECRET is not needed
        "PORT": "not-a-port",
        "DATABASE_URL": f"mysql://bot:{password}@db.invalid/bot",
    }
    result = run_cli(["run"], env, tmp_path)
    assert result.returncode == 78, result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert sorted(line.split()[1] for line in problems) == [
        "ASANA_TOKEN",
        "DATABASE_URL",
        "PORT",
    ], result.stderr
    assert "Traceback" not in result.stderr
    assert password not in result.stderr and "not-a-port" not in result.stderr
    assert "SLACK_SIGNING_SECRET" not in result.stderr


def _json_error(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    body = json.loads(result.stdout)
    assert isinstance(body, dict) and body["error"] and body["message"], body
    return body


@pytest.mark.parametrize(
    ("fault", "reason", "says"),
    [
        ({"missing_data": True}, "no_data", "had no `data`"),
        ({"wrong_gid": "999"}, "wrong_gid", f"answered about export 999, not {GID}"),
    ],
)
def test_check_malformed_answer_has_its_own_exit_code(
    fake_asana: FakeAsana, tmp_path: Path, fault: dict[str, object], reason: str, says: str
) -> None:
    """Not retried (asking again gets the same answer), exit 6, and it says which it was."""
    env = {"ASANA_TOKEN": ASANA_TOKEN, "ASANA_BASE_URL": fake_asana.base_url}  # default budget
    fake_asana.set_export(GID, "pending")
    fake_asana.fail(times=50, **fault)
    result = run_cli(["check", GID], env, tmp_path)
    assert result.returncode == 6, (result.stdout, result.stderr)
    assert says in result.stderr
    assert len(fake_asana.requests) == 1
    result = run_cli(["check", GID, "--json"], env, tmp_path)
    body = _json_error(result)
    assert result.returncode == 6 and body["error"] == "malformed" and body["reason"] == reason


def test_check_shows_a_link_only_for_a_finished_export(
    fake_asana: FakeAsana, asana_env, tmp_path: Path
) -> None:
    """Asana's own examples carry a download_url on a pending export: not shown."""
    url = "https://exports.example/pending.json.gz?X-Amz-Signature=canary"
    fake_asana.set_export(GID, "pending", extra={"download_url": url})
    result = run_cli(["check", GID], asana_env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "pending" in result.stdout
    assert "download" not in result.stdout and "valid until" not in result.stdout
    facts = json.loads(run_cli(["check", GID, "--json"], asana_env, tmp_path).stdout)
    assert facts["state"] == "pending"
    assert "download_url" not in facts and "download_url_valid_until" not in facts


def test_check_uses_the_canonical_gid(fake_asana: FakeAsana, asana_env, tmp_path: Path) -> None:
    fake_asana.set_export("77", "started")
    result = run_cli(["check", "0077", "--json"], asana_env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["gid"] == "77"
    assert [r.path.rsplit("/", 1)[-1] for r in fake_asana.requests] == ["77"]


@pytest.mark.parametrize("arg", ["١٢٣", "１２３"])
def test_check_digits_of_other_scripts_are_not_a_number(
    fake_asana: FakeAsana, asana_env, tmp_path: Path, arg: str
) -> None:
    result = run_cli(["check", arg], asana_env, tmp_path)
    assert result.returncode == 2
    assert "not a number" in result.stderr and "too long" not in result.stderr
    assert fake_asana.requests == []


@pytest.mark.parametrize(
    ("setup", "arg", "env", "code", "error"),
    [
        (lambda fake: None, "abc", {}, 2, "bad_input"),
        (lambda fake: None, "١٢٣", {}, 2, "bad_input"),
        (lambda fake: None, "404040", {}, 3, "not_found"),
        (lambda fake: fake.set_token("another"), GID, {}, 4, "unauthorized"),
        (lambda fake: fake.fail(503, times=50), GID, {}, 5, "asana_down"),
        (lambda fake: fake.fail(missing_data=True, times=50), GID, {}, 6, "malformed"),
        (lambda fake: None, GID, {"ASANA_TOKEN": ""}, 78, "configuration"),
    ],
)
def test_check_json_prints_json_for_every_error(
    fake_asana: FakeAsana, asana_env, tmp_path: Path, setup, arg, env, code, error
) -> None:
    fake_asana.set_export(GID, "pending")
    setup(fake_asana)
    result = run_cli(["check", arg, "--json"], {**asana_env, **env}, tmp_path)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert _json_error(result)["error"] == error
    assert ASANA_TOKEN not in result.stdout + result.stderr


def test_version_and_help(tmp_path: Path) -> None:
    assert "asana-export-bot" in run_cli(["--version"], {}, tmp_path).stdout
    assert "check" in run_cli(["--help"], {}, tmp_path).stdout
    check_help = " ".join(run_cli(["check", "--help"], {}, tmp_path).stdout.split())
    assert "6 malformed answer from Asana" in check_help
