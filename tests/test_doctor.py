"""`asana-export-bot doctor`, run as an operator runs it, against the fakes on 127.0.0.1.

All checks pass first; then each check is broken on its own and must fail (or warn) with a fix,
while every other check still runs. No run prints a token.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from pathlib import Path

import pytest

from bot.db import create_engine, upgrade
from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import DEFAULT_BOT_SCOPES, FakeSlack
from bot.doctor.probes import head_revision
from bot.testing.process import SIGNING_SECRET, free_port
from tests.conftest import ASANA_TOKEN
from tests.test_cli import run_cli

GID = "1200000000000077"
SLACK_CANARY = "xoxb-doctor-canary-5e1f0c"
APP_CANARY = "xapp-doctor-canary-a93b11"
NAMES = ["settings", "slack auth.test", "slack scopes", "asana token", "database", "port"]


@pytest.fixture
def fake_slack() -> FakeSlack:  # overrides conftest's: canary tokens
    with FakeSlack(bot_token=SLACK_CANARY, app_token=APP_CANARY) as fake:
        yield fake


def _migrate(url: str, revision: str = "head") -> None:
    async def go() -> None:
        engine = create_engine(url)
        try:
            await upgrade(engine, revision)
        finally:
            await engine.dispose()

    asyncio.run(go())


@pytest.fixture
def env(fake_asana: FakeAsana, fake_slack: FakeSlack, tmp_path: Path) -> dict[str, str]:
    """A healthy HTTP-mode deployment: every check passes."""
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    _migrate(url)
    return {
        "SLACK_BOT_TOKEN": SLACK_CANARY,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_APP_TOKEN": "",
        "SLACK_API_URL": fake_slack.api_url,
        "ASANA_TOKEN": ASANA_TOKEN,
        "ASANA_BASE_URL": fake_asana.base_url,
        "DATABASE_URL": url,
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
    }


def doctor(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_cli(["doctor", *args], env, cwd)
    everything = result.stdout + result.stderr
    for secret in (ASANA_TOKEN, SLACK_CANARY, APP_CANARY, SIGNING_SECRET):
        assert secret not in everything, everything
    assert "Traceback" not in everything, everything
    return result


def checks_of(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, list[dict[str, str]]]:
    """Run with --json; (exit code, checks)."""
    result = doctor(env, cwd, "--json", *args)
    body = json.loads(result.stdout)
    assert body["ok"] is (result.returncode == 0), result.stdout
    assert all(set(c) == {"name", "status", "detail", "fix"} for c in body["checks"])
    return result.returncode, body["checks"]


def only(checks: list[dict[str, str]], name: str) -> dict[str, str]:
    (found,) = [c for c in checks if c["name"] == name]
    return found


def statuses(checks: list[dict[str, str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for c in checks:
        out.setdefault(c["name"], set()).add(c["status"])
    return out


def test_everything_passes_against_the_fakes(
    env: dict[str, str], tmp_path: Path, fake_asana: FakeAsana, fake_slack: FakeSlack
) -> None:
    fake_asana.set_export(GID, "started", organization_name="Acme Corp")
    result = doctor(env, tmp_path, "--export", GID)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(NAMES) + 1 and all(line.startswith("PASS") for line in lines), lines
    text = result.stdout
    assert "workspace Example (T0001)" in text and "bot user asana-export-bot (U0BOT)" in text
    assert f"all {len(DEFAULT_BOT_SCOPES)} scopes of manifest.yml granted" in text
    assert "Export Service Account" in text and f"export {GID} is started" in text
    assert f"schema at head {head_revision()}" in text
    code, checks = checks_of(env, tmp_path)
    assert code == 0 and [c["name"] for c in checks] == NAMES
    assert {c["status"] for c in checks} == {"pass"}
    assert fake_slack.calls_to("auth.test") and not fake_slack.calls_to("apps.connections.open")
    assert [r.path for r in fake_asana.requests][-1] == "/api/1.0/users/me"


def test_settings_problems_fail_and_the_other_checks_still_run(
    env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **env,
        "SLACK_BOT_TOKEN": "",
        "HTTP_MAX_CONNECTIONS": "lots-canary",
        "LINK_POLICY": "nope",
    }
    code, checks = checks_of(env, tmp_path)
    assert code == 1
    settings = [c for c in checks if c["name"] == "settings"]
    assert sorted(c["detail"].split()[0] for c in settings) == [
        "HTTP_MAX_CONNECTIONS",
        "LINK_POLICY",
        "SLACK_BOT_TOKEN",
    ]
    assert all(c["status"] == "fail" and c["fix"].startswith("set it to") for c in settings)
    assert only(checks, "slack auth.test")["detail"] == "not checked: SLACK_BOT_TOKEN unusable"
    found = statuses(checks)
    assert found["asana token"] == {"pass"} and found["database"] == {"pass"}
    assert found["port"] == {"pass"}
    assert "lots-canary" not in json.dumps(checks)


def test_slack_refusing_the_bot_token_fails(
    env: dict[str, str], tmp_path: Path, fake_slack: FakeSlack
) -> None:
    fake_slack.fail("auth.test", "invalid_auth")
    result = doctor(env, tmp_path)
    assert result.returncode == 1
    (line,) = [x for x in result.stdout.splitlines() if "slack auth.test" in x]
    assert line.startswith("FAIL") and "invalid_auth" in line and "SLACK_BOT_TOKEN" in line
    assert "slack scopes" not in result.stdout  # nothing to compare without an answer
    assert "PASS  asana token" in result.stdout


def test_slack_unreachable_fails(env: dict[str, str], tmp_path: Path) -> None:
    env = {**env, "SLACK_API_URL": f"http://127.0.0.1:{free_port()}/api/"}
    code, checks = checks_of(env, tmp_path)
    assert code == 1
    auth = only(checks, "slack auth.test")
    assert auth["status"] == "fail" and "cannot reach Slack" in auth["detail"]


def test_missing_essential_scope_fails(
    env: dict[str, str], tmp_path: Path, fake_slack: FakeSlack
) -> None:
    fake_slack.scopes = tuple(s for s in DEFAULT_BOT_SCOPES if s != "chat:write")
    result = doctor(env, tmp_path)
    assert result.returncode == 1
    (line,) = [x for x in result.stdout.splitlines() if "scopes" in x]
    assert line.startswith("FAIL") and "missing chat:write" in line and "status cards" in line
    assert "reinstall the app" in line


def test_missing_read_scopes_fail_unless_links_go_anywhere(
    env: dict[str, str], tmp_path: Path, fake_slack: FakeSlack
) -> None:
    fake_slack.scopes = tuple(s for s in DEFAULT_BOT_SCOPES if s != "groups:read")
    code, checks = checks_of(env, tmp_path)
    assert code == 1 and only(checks, "slack scopes")["status"] == "fail"
    code, checks = checks_of({**env, "LINK_POLICY": "anywhere"}, tmp_path)
    assert code == 0 and only(checks, "slack scopes")["status"] == "warn"


def test_missing_history_scopes_warn_and_say_what_they_buy(
    env: dict[str, str], tmp_path: Path, fake_slack: FakeSlack
) -> None:
    fake_slack.scopes = tuple(s for s in DEFAULT_BOT_SCOPES if not s.endswith(":history"))
    result = doctor(env, tmp_path)
    assert result.returncode == 0, result.stdout
    warned = [x for x in result.stdout.splitlines() if x.startswith("WARN")]
    assert len(warned) == 4, result.stdout
    assert all("no duplicate" in x and "still works" in x for x in warned)


def test_no_scopes_header_warns(env: dict[str, str], tmp_path: Path, fake_slack: FakeSlack) -> None:
    fake_slack.scopes = None
    code, checks = checks_of(env, tmp_path)
    assert code == 0 and only(checks, "slack scopes")["status"] == "warn"


def test_socket_mode_token_is_checked_and_can_fail(
    env: dict[str, str], tmp_path: Path, fake_slack: FakeSlack
) -> None:
    env = {**env, "SLACK_APP_TOKEN": APP_CANARY, "SLACK_SIGNING_SECRET": ""}
    code, checks = checks_of(env, tmp_path)
    assert code == 0, checks
    assert only(checks, "slack socket mode")["status"] == "pass"
    assert len(fake_slack.calls_to("apps.connections.open")) == 1
    fake_slack.fail("apps.connections.open", "invalid_auth")
    code, checks = checks_of(env, tmp_path)
    socket_mode = only(checks, "slack socket mode")
    assert code == 1 and socket_mode["status"] == "fail"
    assert "invalid_auth" in socket_mode["detail"] and "SLACK_APP_TOKEN" in socket_mode["fix"]


def test_asana_refusing_the_token_fails(
    env: dict[str, str], tmp_path: Path, fake_asana: FakeAsana
) -> None:
    fake_asana.set_token("another-token")
    code, checks = checks_of(env, tmp_path)
    token = only(checks, "asana token")
    assert code == 1 and token["status"] == "fail"
    assert "401" in token["detail"] and "ASANA_TOKEN" in token["fix"]


def test_unknown_export_fails(env: dict[str, str], tmp_path: Path) -> None:
    code, checks = checks_of(env, tmp_path, "--export", "404040")
    export = only(checks, "asana export")
    assert code == 1 and export["status"] == "fail" and "404040 not found" in export["detail"]
    assert only(checks, "asana token")["status"] == "pass"
    code, checks = checks_of(env, tmp_path, "--export", "abc")
    assert code == 1 and "not an export gid" in only(checks, "asana export")["detail"]


def test_a_file_that_is_not_sqlite_fails(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are not the tables you are looking for\n")
    code, checks = checks_of({**env, "DATABASE_URL": f"sqlite:///{path}"}, tmp_path)
    database = only(checks, "database")
    assert code == 1 and database["status"] == "fail"
    assert "not a SQLite database" in database["detail"] and "DATABASE_URL" in database["fix"]
    assert path.read_text().startswith("these are not")  # untouched


def test_a_schema_behind_head_fails_and_nothing_is_migrated(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    _migrate(url, "0001")
    before = path.read_bytes()
    code, checks = checks_of({**env, "DATABASE_URL": url}, tmp_path)
    database = only(checks, "database")
    assert code == 1 and database["status"] == "fail"
    assert f"at schema 0001, behind this version's head {head_revision()}" in database["detail"]
    assert "back the database up" in database["fix"]
    assert path.read_bytes() == before


def test_a_missing_database_file_warns_and_is_not_created(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "new" / "bot.db"
    code, checks = checks_of({**env, "DATABASE_URL": f"sqlite:///{path}"}, tmp_path)
    assert code == 0 and only(checks, "database")["status"] == "warn"
    assert not path.parent.exists()


def test_a_taken_port_fails(env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, checks = checks_of({**env, "PORT": str(port)}, tmp_path)
    found = only(checks, "port")
    assert code == 1 and found["status"] == "fail"
    assert f"PORT {port}" in found["detail"] and "already in use" in found["detail"]
    assert "free port" in found["fix"]


def test_postgres_database_checks_without_migrating(
    env: dict[str, str], tmp_path: Path, fresh_postgres_url: str
) -> None:
    code, checks = checks_of({**env, "DATABASE_URL": fresh_postgres_url}, tmp_path)
    assert code == 1 and "no schema" in only(checks, "database")["detail"]
    _migrate(fresh_postgres_url)
    code, checks = checks_of({**env, "DATABASE_URL": fresh_postgres_url}, tmp_path)
    assert code == 0 and only(checks, "database")["status"] == "pass"


def test_the_archive_location_is_probed_when_archiving_is_on(
    env: dict[str, str], tmp_path: Path
) -> None:
    code, checks = checks_of(env, tmp_path)
    assert code == 0 and "archive" not in [c["name"] for c in checks], "off: nothing to check"
    code, checks = checks_of({**env, "ARCHIVE_URL": f"file://{tmp_path / 'archive'}"}, tmp_path)
    found = only(checks, "archive")
    assert code == 0 and found["status"] == "pass" and "writable" in found["detail"]
    assert list((tmp_path / "archive").iterdir()) == [], "the probe object is deleted"
    (tmp_path / "a-file").write_text("not a directory")
    code, checks = checks_of(
        {**env, "ARCHIVE_URL": f"file://{tmp_path / 'a-file' / 'x'}"}, tmp_path
    )
    found = only(checks, "archive")
    assert code == 1 and found["status"] == "fail" and "cannot write" in found["detail"]
    code, checks = checks_of({**env, "ARCHIVE_URL": "ftp://nowhere/x"}, tmp_path)
    assert code == 1 and only(checks, "archive")["detail"] == "not checked: ARCHIVE_URL unusable"
