"""The test kit and the fakes ship in the package: they import without dev-only dependencies,
bench/ does not import tests/, and the kit's waiting and clock behave as their callers rely on."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bot.testing import async_wait_until, wait_until
from bot.testing.scenario import Clock

REPO = Path(__file__).resolve().parent.parent
#: What `pip install asana-export-bot` does not bring: the dev and bench extras.
DEV_ONLY = (
    "pytest",
    "hypothesis",
    "yaml",
    "jsonschema",
    "openapi_schema_validator",
    "asana",
    "tests",
)
SHIPPED = ("bot.demo.fake_asana", "bot.demo.fake_slack", "bot.demo.signing", "bot.testing")

_BLOCK_DEV_IMPORTS = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {DEV_ONLY!r}:
            raise ImportError("dev-only module imported: " + name)
sys.meta_path.insert(0, Block())
import {", ".join(SHIPPED)}
import bot.testing.scenario
print("ok")
"""


def test_fakes_and_kit_import_without_dev_dependencies() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _BLOCK_DEV_IMPORTS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((REPO / "bench").glob("*.py")), ids=lambda p: p.name)
def test_bench_imports_the_kit_not_tests(path: Path) -> None:
    """Every import, lazy ones inside functions included."""
    from_tests = sorted(m for m in _imported_modules(path) if m.split(".")[0] == "tests")
    assert from_tests == [], f"{path.name} imports {from_tests}"


def test_wait_until_returns_the_value_or_fails_naming_what() -> None:
    started = time.monotonic()
    ready_at = started + 0.2
    assert wait_until(lambda: time.monotonic() >= ready_at and "done", 5) == "done"
    with pytest.raises(AssertionError, match=r"not within 0\.1s: the moon"):
        wait_until(lambda: None, 0.1, "the moon")


async def test_async_wait_until_lets_the_loop_run() -> None:
    import asyncio

    flag: list[bool] = []
    asyncio.get_running_loop().call_later(0.05, flag.append, True)
    assert await async_wait_until(lambda: flag, 5) == [True]


def test_clock_moves_only_forward_and_only_when_told() -> None:
    clock = Clock()
    first = clock()
    assert clock() == first
    assert (clock.advance(90) - first).total_seconds() == 90
    assert clock.advance(-5) == clock(), "never back"


def test_scenario_settings_ignore_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A developer's own Slack app token or policy must not change what a scenario runs."""
    from types import SimpleNamespace

    from bot.testing.scenario import scenario_settings

    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1-a-real-one")
    monkeypatch.setenv("LINK_POLICY", "anywhere")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("ALLOWED_USERS=U0ONLY\n")
    fakes = SimpleNamespace(
        base_url="http://127.0.0.1:9/api/1.0",
        api_url="http://127.0.0.1:9/api/",
        bot_token="xoxb-fake",
        app_token="xapp-fake",
    )
    settings = scenario_settings(fakes, fakes, "sqlite:///x.db")  # type: ignore[arg-type]
    assert not settings.socket_mode
    assert settings.LINK_POLICY.value == "private" and not settings.ALLOWED_USERS
    assert (
        scenario_settings(fakes, fakes, "sqlite:///x.db", LINK_POLICY="button").LINK_POLICY.value
        == "button"
    )  # type: ignore[arg-type]


async def test_overlapping_scenarios_leave_the_log_level_as_they_found_it(
    fake_asana: Any, fake_slack: Any, tmp_path: Path
) -> None:
    """Scenarios closed out of order (replicas in asyncio.gather) must not leave the root
    logger at DEBUG for the rest of the session: every later test would log everything."""
    import logging

    from bot.testing.scenario import Scenario

    root = logging.getLogger()
    before = root.level
    first = Scenario.open(fake_asana, fake_slack, f"sqlite:///{tmp_path / 'a.db'}")
    second = Scenario.open(fake_asana, fake_slack, f"sqlite:///{tmp_path / 'b.db'}")
    await first.__aenter__()
    await second.__aenter__()
    assert root.level == logging.DEBUG
    await first.__aexit__(None, None, None)  # the first one opened closes first
    assert root.level == logging.DEBUG, "the second is still open"
    await second.__aexit__(None, None, None)
    assert root.level == before
