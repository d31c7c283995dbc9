"""The console script's import pause (bot.launch): no cyclic collections while the bot's modules
load, and the collector left as it was found."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

from bot.launch import collector_paused
from bot.testing.scenario import Scenario


def test_the_collector_is_off_inside_and_restored_after() -> None:
    assert gc.isenabled()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0  # what the block made is in the permanent generation
    finally:
        gc.unfreeze()


def test_a_collector_found_off_stays_off() -> None:
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


def _printed_by(code: str) -> str:
    """What `code` prints in a fresh interpreter (this one's), stripped."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


def test_importing_what_run_imports_collects_nothing() -> None:
    """What `run` imports (bot.cli, then bot.app), inside the pause, in a fresh interpreter:
    no collection runs (without the pause about 250 did)."""
    code = (
        "import gc\n"
        "runs = []\n"
        "gc.callbacks.append(lambda phase, info: runs.append(phase) if phase == 'start' else None)\n"
        "from bot.launch import collector_paused\n"
        "with collector_paused():\n"
        "    import bot.cli, bot.app\n"
        "print(len(runs))\n"
    )
    assert _printed_by(code) == "0"


def test_run_imports_the_app_with_the_collector_off(
    bot_env: dict[str, str], tmp_path: Path
) -> None:
    """`asana-export-bot run` as the console script starts it: bot.app's module body runs with
    the collector off (an import hook looks, then `serve` is left unrun)."""
    code = (
        "import asyncio, gc, sys\n"
        "seen = []\n"
        "class Look:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'bot.app':\n"
        "            seen.append(gc.isenabled())\n"
        "sys.meta_path.insert(0, Look())\n"
        "asyncio.run = lambda serving: serving.close()\n"
        "sys.argv = ['asana-export-bot', 'run']\n"
        "from bot.launch import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(seen, gc.isenabled())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, **bot_env},
    )
    assert done.stdout.strip().splitlines()[-1] == "[False] True", done.stderr[-2000:]


def test_serving_without_archive_url_leaves_the_archive_job_unimported() -> None:
    """Everything `run` imports before it serves (bot.cli, bot.app, the listeners) needs only
    the archive queue and its table; the job (streaming, storage, obstore) is imported where
    ARCHIVE_URL is set (tests/test_e2e_archive.py runs it in the process)."""
    code = (
        "import sys\n"
        "import bot.cli, bot.app, bot.lifecycle\n"
        "import handlers.actions, handlers.commands, handlers.home\n"
        "print(sorted(m for m in sys.modules if m.startswith(('bot.archive.', 'obstore'))))\n"
    )
    assert _printed_by(code) == "['bot.archive.queue', 'bot.archive.records']"


async def test_the_bolt_app_has_a_name_so_bolt_does_not_walk_the_stack(scenario: Scenario) -> None:
    """Unnamed, `AsyncApp` names itself after its caller's file through `inspect.stack()`, which
    resolves every frame's module against all of sys.modules: about 30 ms of start-up."""
    assert scenario.bolt.name == "asana-export-bot"
