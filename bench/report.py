"""Turn sections into `docs/benchmarks.md`: the machine, the table, how to reproduce, notes."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bench.common import REPO_ROOT, Row, Section, format_value

PACKAGES = ("slack-bolt", "slack-sdk", "aiohttp", "httpx", "asana")
COLUMNS = ("benchmark", "figure", "ours", "baseline", "ratio", "target", "met?")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> subprocess.CompletedProcess[str] | None:
    """A read-only git query, or None when git or the repository is not there."""
    try:
        return subprocess.run(  # noqa: S603 - fixed git queries
            ["git", *args],  # noqa: S607 - git from PATH, optional
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def _commit() -> str:
    """HEAD, and whether tracked files differ from it (the figures then measure those edits)."""
    head = _git("rev-parse", "--short", "HEAD")
    if head is None or head.returncode != 0:
        return "unknown"
    diff = _git("diff", "--quiet", "HEAD", "--")
    dirty = diff is not None and diff.returncode == 1
    return head.stdout.strip() + (" with uncommitted changes" if dirty else "")


def machine() -> dict[str, str]:
    """What a reader needs to compare these figures with theirs."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return {
        "CPU": cpu_model(),
        "cores": f"{os.cpu_count()} logical, {usable} usable by this process",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "OS": platform.platform(),
        "packages": ", ".join(versions),
        "commit": _commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _met(row: Row) -> str:
    met = row.met
    return "n/a" if met is None else ("yes" if met else "**no**")


def table(sections: list[Section]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for section in sections:
        if section.error:
            lines.append(f"| {section.name} | (failed: {section.error}) | | | | | **no** |")
        for row in section.rows:
            ratio = row.ratio
            cells = (
                row.benchmark,
                row.figure,
                format_value(row.ours, row.unit),
                format_value(row.baseline, row.unit)
                if row.baseline is not None
                else row.baseline_note or "—",
                f"{ratio:.2f}" if ratio is not None else "—",
                row.target.describe(row.unit) if row.target else "—",
                _met(row) if row.target else "—",
            )
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def render(
    sections: list[Section], *, command: str, size: str, seconds: float, background: str
) -> str:
    info = machine()
    out = [
        "# Benchmarks",
        "",
        "Written by the benchmark suite (`bench/`); do not edit by hand, run it again.",
        f"Size `{size}`, {seconds:.0f} s in all, measured {info['date']}.",
        "",
        "## Machine",
        "",
        *(f"- {key}: {value}" for key, value in info.items() if key != "date"),
        f"- background: {background}",
        "",
        "## Results",
        "",
        "Ratio is ours / baseline, both measured in the same run. 'met?' is empty (—) where the"
        " figure has no target: it is shown for the reader, not judged.",
        "",
        *table(sections),
        "",
        "## How to reproduce",
        "",
        "```sh",
        "python -m pip install -e '.[dev]' 'asana>=5,<6'   # asana: the official SDK, a baseline",
        command,
        "```",
        "",
        "`--size smoke` runs everything at a tiny size (CI runs it in `tests/test_bench_smoke.py`,"
        " checking only that a table comes out); `--only NAME` runs one benchmark module;"
        " `--out PATH` writes elsewhere. Everything talks to fakes on 127.0.0.1 only. To add a"
        " benchmark, see the docstring of `bench/__main__.py`.",
        "",
        "## Notes",
        "",
        f"- Contention: the machine has {os.cpu_count()} cores. The server under test, the load"
        " generator or client worker, and the fakes (threads of the benchmark process) share"
        " them, so absolute figures are lower than on a dedicated server; ours and the baseline"
        " run under the same conditions, one after the other, so the ratios are the figures to"
        " compare. Each note below says what limits its figures.",
    ]
    for section in sections:
        out.append(f"- {section.name} ({section.seconds:.0f} s):")
        out += [f"  - {note}" for note in section.notes]
        if section.error:
            out.append(f"  - failed: {section.error}")
    return "\n".join(out) + "\n"
