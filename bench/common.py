"""What every benchmark shares: the result types, statistics, and starting processes and fakes.

A benchmark module exposes `NAME` and `run(ctx: Context) -> Section`. It measures ours and its
baseline in the same run and returns `Row`s; the report turns them into the table.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

REPO_ROOT = Path(__file__).resolve().parent.parent

Size = Literal["smoke", "full"]


# ------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Target:
    """A pass/fail bound on the ratio to the baseline, or on our own value."""

    limit: float
    on: Literal["ratio", "value"] = "ratio"
    better: Literal["lower", "higher"] = "lower"

    def describe(self, unit: str) -> str:
        sign = "≤" if self.better == "lower" else "≥"
        if self.on == "ratio":
            return f"ratio {sign} {self.limit:g}"
        return f"{sign} {format_value(self.limit, unit)}"

    def met(self, ours: float | None, ratio: float | None) -> bool | None:
        value = ratio if self.on == "ratio" else ours
        if value is None:
            return None
        return value <= self.limit if self.better == "lower" else value >= self.limit


@dataclass(frozen=True)
class Row:
    """One figure: ours beside its baseline measured in the same run."""

    benchmark: str
    figure: str
    ours: float | None
    unit: str
    baseline: float | None = None
    target: Target | None = None
    #: Shown instead of a missing baseline (e.g. why there is none).
    baseline_note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.baseline is None or self.baseline == 0:
            return None
        return self.ours / self.baseline

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.ours, self.ratio)


@dataclass
class Section:
    """What one benchmark module reports: its rows and the notes that explain them."""

    name: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in ("req/s", "calls/s"):
        return f"{value:,.0f} {unit}"
    if unit == "count":
        return f"{value:,.0f}"
    if unit == "µs" or abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.1f} {unit}" if abs(value) >= 10 else f"{value:.2f} {unit}"


# ------------------------------------------------------------------------------ context


@dataclass
class Context:
    """The run's size, scratch directory and progress log, handed to every benchmark."""

    size: Size
    workdir: Path
    verbose: bool = True

    def pick(self, *, smoke: Any, full: Any) -> Any:
        """The parameter for this size: tiny for CI, the documented one for `full`."""
        return smoke if self.size == "smoke" else full

    def log(self, message: str) -> None:
        if self.verbose:
            print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def subdir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


# ------------------------------------------------------------------------------ statistics


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100): a value that was actually measured."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


# ------------------------------------------------------------------------------ processes


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for our helper processes: the repo on the path, nothing else changed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def python_module(module: str, *args: str) -> list[str]:
    """argv for `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def run_json(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None) -> Any:
    """Run a helper that prints one JSON document as its last stdout line; return it."""
    done = subprocess.run(  # noqa: S603 - our own helper modules, fixed argv
        cmd,
        cwd=REPO_ROOT,
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[2:4]} exited {done.returncode}:\n{done.stderr[-2000:]}")
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"{cmd[2:4]} printed nothing:\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU a process has used so far (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


@dataclass(frozen=True)
class CpuReading:
    """A process's CPU so far, two ways: /proc/<pid>/stat's user + system ticks (10 ms steps,
    counting threads that ended) and each live thread's nanoseconds on a CPU (schedstat)."""

    ticks: float
    #: thread id -> seconds on a CPU; None where the kernel keeps no schedstats.
    threads: dict[int, float] | None


def cpu_reading(pid: int) -> CpuReading | None:
    """The CPU `pid` has used so far (Linux /proc), or None elsewhere."""
    ticks = cpu_seconds(pid)
    if ticks is None:
        return None
    threads: dict[int, float] | None = {}
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            ns = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0]
            threads[int(tid)] = int(ns) / 1e9
    except (OSError, IndexError, ValueError):
        threads = None
    return CpuReading(ticks, threads)


def cpu_between(before: CpuReading, after: CpuReading) -> float:
    """Seconds of CPU between two readings of one process.

    To the nanosecond (summed over its threads) when no thread ended in between; a thread that
    ended took its time with it, so then the ticks tell it, to 10 ms. User and system ticks are
    each cut to 10 ms, so a difference of two can be 20 ms off: 8 % of the 0.25 s a batch of a
    bare Bolt ack's commands costs.
    """
    if (
        before.threads is None
        or after.threads is None
        or not before.threads.keys() <= after.threads.keys()
    ):
        return after.ticks - before.ticks
    return sum(after.threads.values()) - sum(before.threads.values())


def system_busy_seconds() -> float | None:
    """CPU time all processes on the machine have used since boot (Linux /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU time of this process and every child it has waited for (the whole suite's)."""
    me, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class Background:
    """How much CPU other processes took during the run: the figures' noise floor."""

    started_wall: float = field(default_factory=time.perf_counter)
    started_busy: float | None = field(default_factory=system_busy_seconds)
    started_own: float = field(default_factory=own_cpu_seconds)
    load_before: str = field(
        default_factory=lambda: "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    )

    def describe(self) -> str:
        wall = time.perf_counter() - self.started_wall
        busy = system_busy_seconds()
        cores = os.cpu_count() or 1
        text = f"load average before the run {self.load_before}"
        if busy is None or self.started_busy is None or wall <= 0:
            return text
        other = (busy - self.started_busy) - (own_cpu_seconds() - self.started_own)
        share = max(other, 0.0) / (wall * cores)
        return f"{text}; other processes used {share:.0%} of the machine's CPU during the run" + (
            " (a busy machine: expect noisier figures)" if share > 0.1 else ""
        )


def healthy(port: int, path: str = "/healthz") -> bool:
    """One cheap health probe (stdlib, no client set-up, so polling barely costs CPU)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


class ServerProcess:
    """A server in a subprocess, timed from exec to its first successful health check."""

    def __init__(
        self, cmd: list[str], *, port: int, env: dict[str, str], cwd: Path, log_path: Path
    ) -> None:
        self.cmd, self.port, self.env, self.cwd, self.log_path = cmd, port, env, cwd, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_after = 0.0

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slack/events"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, *, timeout: float = 30.0, poll: float = 0.01) -> ServerProcess:
        with self.log_path.open("ab") as log:
            started = time.perf_counter()
            self.proc = subprocess.Popen(  # noqa: S603 - our own programs, fixed argv
                self.cmd, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cmd[-1]} exited {self.proc.returncode}: {self.logs()}")
            if healthy(self.port):
                self.ready_after = time.perf_counter() - started
                return self
            time.sleep(poll)
        self.stop()
        raise RuntimeError(f"{self.cmd[-1]} not healthy within {timeout}s: {self.logs()}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def logs(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-3000:]

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def baseline_bolt(workdir: Path, env: dict[str, str], port: int) -> ServerProcess:
    """The minimal Bolt AsyncApp (`bench.baseline_bolt`) as a server process, not yet started."""
    return ServerProcess(
        python_module("bench.baseline_bolt"),
        port=port,
        env=child_env({**env, "PORT": str(port)}),
        cwd=REPO_ROOT,
        log_path=workdir / "baseline-bolt.log",
    )


# ------------------------------------------------------------------------------ fakes

ASANA_TOKEN = "asana-bench-token-5c0ffee"  # noqa: S105 - a fake token for the fake Asana


@contextlib.contextmanager
def fakes() -> Iterator[tuple[Any, Any]]:
    """A started FakeAsana and FakeSlack (threads of this process), stopped afterwards."""
    from bot.demo.fake_asana import FakeAsana
    from bot.demo.fake_slack import FakeSlack

    with FakeAsana(token=ASANA_TOKEN) as asana, FakeSlack() as slack:
        yield asana, slack


def bot_env(asana: Any, slack: Any, workdir: Path, **extra: str) -> dict[str, str]:
    """What the bot needs to talk to the fakes in HTTP mode (`bot.testing.bot_environment`).

    LOG_LEVEL is the production default (INFO), not the tests' DEBUG: a benchmark measures what
    a deployment runs.
    """
    from bot.testing import bot_environment

    return bot_environment(
        asana,
        slack,
        f"sqlite:///{workdir / 'bot.db'}",
        asana_token=ASANA_TOKEN,
        LOG_LEVEL="INFO",
        **extra,
    )


# ------------------------------------------------------------------------------ the bot at scale

#: PostgreSQL server for benchmarks that need one; each creates and drops its own database.
POSTGRES_URL = os.environ.get(
    "ASANA_BOT_BENCH_POSTGRES_URL",
    os.environ.get("ASANA_BOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
)
BENCH_TEAM = "T0001"
BENCH_USER = "U0BENCH1"
BENCH_ORG_NAME = "Acme Benchmarks"


def peak_rss_mb(pid: int) -> float | None:
    """A process's peak resident set so far (VmHWM from /proc), in MB; None elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def wait_until(predicate: Any, *, timeout: float, step: float = 0.02) -> bool:
    """Poll `predicate()` until it is true or `timeout` seconds passed (bounded loops only)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def sleep_until(monotonic_deadline: float) -> None:
    """Sleep until a time.monotonic() instant (no-op if it has passed)."""
    delay = monotonic_deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)


@contextlib.contextmanager
def throwaway_postgres(prefix: str) -> Iterator[str | None]:
    """A fresh PostgreSQL database for one benchmark, dropped afterwards.

    Yields its URL, or None when no server answers at POSTGRES_URL (the caller reports the
    rows as not measured instead of failing the whole suite).
    """
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{os.getpid()}_{int(time.time() * 1000) % 1_000_000}"
    admin_url = make_url(POSTGRES_URL).set(drivername="postgresql")
    dsn = admin_url.render_as_string(hide_password=False)
    try:
        admin = psycopg.connect(dsn, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        yield None
        return
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin_url.set(database=name).render_as_string(hide_password=False)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


@dataclass(frozen=True)
class Watch:
    """One channel watching one export, as `Store.subscribe` would have recorded it."""

    gid: str
    channel_id: str
    next_poll_at: Any  # an aware datetime
    state: str = "started"


def started_watches(
    asana: Any, gids: Sequence[str], *, channels: int, first_due: Any, spread: float
) -> list[Watch]:
    """Make every gid a `started` export in the fake Asana, each watched from one of `channels`
    channels, their first polls spread evenly over `spread` seconds from `first_due`."""
    for gid in gids:
        asana.set_export(gid, "started", organization_name=BENCH_ORG_NAME)
    return [
        Watch(gid, f"C{i % channels:08d}", first_due + timedelta(seconds=spread * i / len(gids)))
        for i, gid in enumerate(gids)
    ]


def seed_watches(database_url: str, watches: Sequence[Watch], *, via_subscribe: int) -> float:
    """Create the schema and the watches; returns the mean wall seconds of one subscribe call.

    The first `via_subscribe` watches go through `bot.store.Store.subscribe` (the real code path,
    timed); the rest are bulk INSERTs of the same rows into the store's tables, because one
    subscribe call costs milliseconds and thousands of them would dominate a benchmark.
    """
    import asyncio

    return asyncio.run(_seed_watches(database_url, watches, via_subscribe))


async def _seed_watches(database_url: str, watches: Sequence[Watch], via_subscribe: int) -> float:
    from datetime import UTC, datetime

    from bot.db import create_engine, upgrade
    from bot.models import Export, ExportState
    from bot.store import Store, exports, subscriptions

    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        store = Store(engine)
        now = datetime.now(UTC)
        head, tail = watches[:via_subscribe], watches[via_subscribe:]
        started = time.perf_counter()
        for w in head:
            export = Export(
                gid=w.gid,
                state=ExportState.parse(w.state),
                raw_state=w.state,
                organization_gid="1100000000000001",
                organization_name=BENCH_ORG_NAME,
                created_at=now,
            )
            await store.subscribe(
                team_id=BENCH_TEAM,
                channel_id=w.channel_id,
                user_id=BENCH_USER,
                export=export,
                now=now,
                next_poll_at=w.next_poll_at,
            )
        per_call = (time.perf_counter() - started) / len(head) if head else float("nan")
        store.close()
        seen: set[str] = {w.gid for w in head}
        export_rows = []
        for w in tail:
            if w.gid in seen:
                continue
            seen.add(w.gid)
            export_rows.append(
                {
                    "gid": w.gid,
                    "state": w.state,
                    "raw_state": w.state,
                    "organization_gid": "1100000000000001",
                    "organization_name": BENCH_ORG_NAME,
                    "created_at": now,
                    "next_poll_at": w.next_poll_at,
                    "updated_at": now,
                }
            )
        sub_rows = [
            {
                "export_gid": w.gid,
                "team_id": BENCH_TEAM,
                "channel_id": w.channel_id,
                "user_id": BENCH_USER,
                "created_at": now,
            }
            for w in tail
        ]
        async with engine.begin() as conn:
            for rows, table in ((export_rows, exports), (sub_rows, subscriptions)):
                for i in range(0, len(rows), 5000):
                    await conn.execute(table.insert(), rows[i : i + 5000])
        return per_call
    finally:
        await engine.dispose()
