"""`check` against Prism serving Asana's own OpenAPI spec (tests/reference), not our fake.

Prism answers every GET with Asana's example (static) or with random data fitting the schema
(`-d`): either way an export other than the one asked for, and in the static example a pending
export that carries a download_url. Set ASANA_BOT_TEST_PRISM to the `prism` executable
(`.ci/run` installs @stoplight/prism-cli with npm); without it these tests are skipped.

A malformed answer must come back at once (issue 8 asked for under a second). What makes it fast
is behaviour, and that is what is asserted: one request, no retry, no backoff. The wall-clock time
is printed, not asserted: process start-up alone is 0.3 s on an idle machine and over a second on
a loaded CI runner.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bot.testing.process import free_port
from tests.test_cli import run_cli

PRISM_VAR = "ASANA_BOT_TEST_PRISM"
SPEC = Path(__file__).parent / "reference" / "asana_oas.organization_exports.yaml"
#: The example export in Asana's spec; every static answer is about it.
EXAMPLE_GID = "12345"
ASKED_GID = "1200000000000077"


@dataclass(frozen=True)
class Prism:
    """A running Prism: where it serves, and its log (a line for every request it receives)."""

    base_url: str
    log: Path

    def requests_for(self, gid: str) -> int:
        """How many GETs of this export it has received (its log line precedes its answer)."""
        return self.log.read_text().count(f"[HTTP SERVER] get /organization_exports/{gid} ")


def _prism(tmp_path: Path, *args: str) -> Iterator[Prism]:
    executable = os.environ.get(PRISM_VAR)
    if not executable:
        pytest.skip(f"{PRISM_VAR} is not set (path to the prism executable, see .ci/run)")
    port = free_port()
    log_path = tmp_path / f"prism-{port}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [executable, "mock", *args, "-h", "127.0.0.1", "-p", str(port), str(SPEC)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"  # Prism serves the spec's paths without /api/1.0
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                httpx.get(f"{base_url}/organization_exports/1", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "prism did not start within 30 s"
                time.sleep(0.1)
        yield Prism(base_url, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.fixture
def prism_static(tmp_path: Path) -> Iterator[Prism]:
    yield from _prism(tmp_path)


@pytest.fixture
def prism_dynamic(tmp_path: Path) -> Iterator[Prism]:
    yield from _prism(tmp_path, "-d")


def checked_once(
    prism: Prism, tmp_path: Path, gid: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run `check gid`; assert it asked Prism exactly once (no retry) and print how long it took."""
    env = {"ASANA_TOKEN": "prism-token", "ASANA_BASE_URL": prism.base_url}
    before = prism.requests_for(gid)
    started = time.monotonic()
    result = run_cli(["check", gid, *args], env, tmp_path)
    took = time.monotonic() - started
    print(f"check {gid} {' '.join(args)}: exit {result.returncode} in {took:.2f}s")
    print(result.stdout.strip())
    asked = prism.requests_for(gid) - before
    assert asked == 1, f"Prism got {asked} requests for one check (more than one: a retry)"
    return result


def test_static_example_is_another_export(prism_static: Prism, tmp_path: Path) -> None:
    result = checked_once(prism_static, tmp_path, ASKED_GID, "--json")
    assert result.returncode == 6, (result.stdout, result.stderr)
    body = json.loads(result.stdout)
    assert body["error"] == "malformed" and body["reason"] == "wrong_gid"
    assert f"about export {EXAMPLE_GID}, not {ASKED_GID}" in body["message"]


def test_static_example_pending_export_shows_no_link(prism_static: Prism, tmp_path: Path) -> None:
    """Asana's example is a pending export with a download_url: no link, no 'valid until'."""
    result = checked_once(prism_static, tmp_path, EXAMPLE_GID)
    assert result.returncode == 0, result.stderr
    assert "pending" in result.stdout
    assert "download" not in result.stdout and "valid until" not in result.stdout
    facts = json.loads(checked_once(prism_static, tmp_path, EXAMPLE_GID, "--json").stdout)
    assert facts["state"] == "pending" and "download_url" not in facts


def test_dynamic_answers_are_malformed_fast(prism_dynamic: Prism, tmp_path: Path) -> None:
    """Random answers name random gids (or, by the schema, may lack `data`): malformed, fast."""
    for _ in range(3):
        result = checked_once(prism_dynamic, tmp_path, ASKED_GID, "--json")
        assert result.returncode == 6, (result.stdout, result.stderr)
        body = json.loads(result.stdout)
        assert body["error"] == "malformed" and body["reason"] in ("wrong_gid", "no_data")
