"""Start-up: `asana-export-bot run` from exec to its first good `/healthz`, and import time.

The baseline is the minimal Bolt app (`bench.baseline_bolt`) started and probed the same way,
and for import time the imports that app needs. Runs alternate ours and the baseline after one
unmeasured warm-up run each at full size (so both find their byte code and the OS file cache
warm). PYTHONDONTWRITEBYTECODE is dropped for these processes: a `pip install` compiles every
module it installs, while an editable install under that variable would compile ours (not the
baseline's, which pip installed) on every start.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator

from bench.common import (
    REPO_ROOT,
    Context,
    Row,
    Section,
    ServerProcess,
    Target,
    baseline_bolt,
    bot_env,
    child_env,
    fakes,
    median,
)

NAME = "start-up"
#: What `asana-export-bot run` imports, as it imports it (bot.launch: the collector paused).
BOT_IMPORT = (
    "from bot.launch import collector_paused\nwith collector_paused(): import bot.cli, bot.app"
)
BASELINE_IMPORT = "import bench.baseline_bolt"
#: The libraries any bot on this stack imports before it serves, ours left out: the floor.
STACK_LIBRARIES = (
    "slack_bolt, slack_sdk, aiohttp (as the baseline), sqlalchemy.ext.asyncio, aiosqlite,"
    " httpx, apscheduler, pydantic_settings, prometheus_client, click"
)
STACK_IMPORT = (
    "from bot.launch import collector_paused\nwith collector_paused(): import"
    " bench.baseline_bolt, sqlalchemy.ext.asyncio, aiosqlite, httpx,"
    " apscheduler.schedulers.asyncio, pydantic_settings, prometheus_client, click"
)
#: Issue 14: exec to ready at most this times a bare Bolt app's.
READY_RATIO_TARGET = 1.5


def _bot(ctx: Context, env: dict[str, str], port: int, i: int) -> ServerProcess:
    from bot.testing.process import console_script

    return ServerProcess(
        [console_script(), "run"],
        port=port,
        env=child_env({**env, "PORT": str(port), "HOST": "127.0.0.1"}),
        cwd=ctx.subdir("startup"),
        log_path=ctx.subdir("startup") / f"bot-{i}.log",
    )


@contextlib.contextmanager
def _byte_code_kept() -> Iterator[None]:
    """Child processes may write byte code, as after a `pip install` (see the module doc)."""
    saved = os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["PYTHONDONTWRITEBYTECODE"] = saved


def _start_times(ctx: Context, runs: int, warmup: int) -> tuple[list[float], list[float]]:
    from bot.testing.process import free_port

    ours: list[float] = []
    base: list[float] = []
    workdir = ctx.subdir("startup")
    with fakes() as (asana, slack), _byte_code_kept():
        env = bot_env(asana, slack, workdir)
        for i in range(warmup + runs):
            ctx.log(f"start-up: run {i + 1}/{warmup + runs}" + (" (warm-up)" if i < warmup else ""))
            with _bot(ctx, env, free_port(), i) as proc:
                if i >= warmup:
                    ours.append(proc.ready_after * 1000)
            with baseline_bolt(workdir, env, free_port()) as proc:
                if i >= warmup:
                    base.append(proc.ready_after * 1000)
    return ours, base


def _import_ms(statement: str) -> float:
    """Wall ms of `statement` in a fresh interpreter, timed inside it around the import only.

    Interpreter start and teardown are left out: teardown alone of a process that imported
    SQLAlchemy and Alembic takes hundreds of ms and would be counted as import otherwise.
    """
    code = (
        "import time\nt = time.perf_counter()\n"
        + statement
        + "\nprint((time.perf_counter() - t) * 1000)"
    )
    done = subprocess.run(  # noqa: S603 - this interpreter, fixed code
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return float(done.stdout.strip().splitlines()[-1])


def _import_times(runs: int, warmup: int) -> tuple[float, float, float]:
    """Median import ms of ours, of the baseline's modules and of the stack's libraries,
    alternating."""
    statements = (BOT_IMPORT, BASELINE_IMPORT, STACK_IMPORT)
    with _byte_code_kept():
        for _ in range(warmup):  # byte code and file cache
            for statement in statements:
                _import_ms(statement)
        times: list[list[float]] = [[], [], []]
        for _ in range(runs):
            for found, statement in zip(times, statements, strict=True):
                found.append(_import_ms(statement))
    ours, base, stack = (median(found) for found in times)
    return ours, base, stack


def heaviest_imports(code: str, top: int = 6) -> list[tuple[str, float]]:
    """Top-level packages by their own import time (`-X importtime` self times summed), in ms.

    Self times add up without double counting, unlike the nested cumulative ones.
    """
    done = subprocess.run(  # noqa: S603 - this interpreter, fixed code
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    totals: dict[str, float] = {}
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s+(\S+)", line)
        if m:
            pkg = m.group(2).split(".")[0]
            totals[pkg] = totals.get(pkg, 0.0) + int(m.group(1)) / 1000
    return sorted(totals.items(), key=lambda kv: -kv[1])[:top]


def run(ctx: Context) -> Section:
    runs, warmup = ctx.pick(smoke=1, full=7), ctx.pick(smoke=0, full=1)
    ours, base = _start_times(ctx, runs, warmup)
    ctx.log("start-up: import times")
    ours_imp, base_imp, stack_imp = _import_times(runs, warmup)
    heavy = heaviest_imports("import bot.app")
    # Exec to ready can go no lower than the bare app's plus what the stack's libraries add
    # to its imports: the floor of the first row, in the same run.
    floor = median(base) + stack_imp - base_imp
    section = Section(NAME)
    section.rows += [
        Row(
            NAME,
            f"exec to first /healthz (median of {runs})",
            median(ours),
            "ms",
            median(base),
            Target(READY_RATIO_TARGET),
        ),
        Row(
            NAME,
            f"exec to ready, the stack's floor: the bare app's + the stack's extra imports (median of {runs})",
            floor,
            "ms",
            median(base),
        ),
        Row(NAME, f"import time, as `run` imports (median of {runs})", ours_imp, "ms", base_imp),
        Row(
            NAME,
            f"import time, the stack's libraries alone (median of {runs})",
            stack_imp,
            "ms",
            base_imp,
        ),
    ]
    section.notes += [
        f"Start-up: {runs} run(s) each after {warmup} warm-up run(s), alternating; time from `Popen` to the"
        " first 200 from `GET /healthz`, probed every 10 ms with the standard library (cheap, so"
        " the probe does not compete for the cores). The bot runs `asana-export-bot run` in HTTP"
        " mode on a SQLite file (the warm-up run creates it, so measured runs are restarts; with no"
        " warm-up the first run also creates the schema); what it does before serving (settings,"
        " database upgrade, `auth.test` against the fake Slack, scheduler) counts. The baseline"
        " builds a Bolt AsyncApp and serves.",
        "Import time: in a fresh interpreter, timed inside it around the import statements"
        " (interpreter start and teardown left out), median of the runs. Ours is what"
        " `asana-export-bot run` imports (bot.cli, then bot.app), with the cyclic collector"
        " paused as the console script does (`bot.launch.collector_paused`: without the pause"
        " the collector ran about 250 times during the imports, a sixth of them); the"
        f" baseline is `{BASELINE_IMPORT}` (slack_bolt, slack_sdk, aiohttp), as a bare app"
        " imports it.",
        "The stack's floor: the libraries the product's design and our choices of well-kept"
        f" libraries put on the path to serving ({STACK_LIBRARIES}), imported alone with the"
        " same pause, none of our modules. The floor row is the bare app's exec-to-ready plus"
        " that import's excess over the baseline's: no bot on this stack starts faster, so a"
        " floor ratio above the target's is the limit the first row meets. Ours above the floor"
        " is our own modules, settings, the schema check, `auth.test` and the scheduler.",
        "Packages taking the most import time for bot.app (own"
        " time per top-level package from `-X importtime`, one run; the tool inflates them, the"
        " proportions are what matter): "
        + ", ".join(f"{pkg} {ms:.0f} ms" for pkg, ms in heavy)
        + ".",
    ]
    return section
