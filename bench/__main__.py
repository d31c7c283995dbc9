"""`python -m bench [--size smoke|full] [--only NAME]... [--out PATH]`: run, then write the doc.

To add a benchmark (polling at scale, coalescing, notification latency...): write
`bench/<name>.py` with `NAME` and `run(ctx: Context) -> Section`, and add `<name>` to BENCHMARKS.
`bench.common` has what the existing ones use: `ctx.pick(smoke=..., full=...)` for sizes,
`fakes()` and `bot_env()` for the fake Asana/Slack and the bot's settings, `ServerProcess` and
`baseline_bolt()` for timed server processes, `cpu_seconds(pid)`, `percentile()`, and `Row` /
`Target` for a figure beside its baseline. Measure the baseline in the same run. A benchmark that
raises is reported as failed in the table and makes the exit status 1; the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import report
from bench.common import REPO_ROOT, Background, Context, Section

BENCHMARKS: tuple[str, ...] = (
    "ack_latency",
    "asana_client",
    "startup",
    "polling",
    "coalescing",
    "notify_latency",
    "command_cost",
    "store",
    "archive",
)
DEFAULT_OUT = REPO_ROOT / "docs" / "benchmarks.md"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--size", choices=("smoke", "full"), default="full")
    parser.add_argument("--only", action="append", choices=BENCHMARKS, default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser.parse_args(argv)


def run_one(name: str, ctx: Context) -> Section:
    module = importlib.import_module(f"bench.{name}")
    started = time.perf_counter()
    try:
        section: Section = module.run(ctx)
    except Exception as exc:
        traceback.print_exc()
        section = Section(getattr(module, "NAME", name), error=f"{type(exc).__name__}: {exc}")
    section.seconds = time.perf_counter() - started
    ctx.log(f"{section.name}: {section.seconds:.1f} s")
    return section


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    names = args.only or list(BENCHMARKS)
    started = time.perf_counter()
    background = Background()
    with tempfile.TemporaryDirectory(prefix="asana-bot-bench-") as tmp:
        ctx = Context(size=args.size, workdir=Path(tmp), verbose=not args.quiet)
        sections = [run_one(name, ctx) for name in names]
    command = " ".join(
        ["python -m bench", f"--size {args.size}", *(f"--only {n}" for n in args.only or [])]
    )
    text = report.render(
        sections,
        command=command,
        size=args.size,
        seconds=time.perf_counter() - started,
        background=background.describe(),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print("\n".join(report.table(sections)))
    print(f"\nwritten to {args.out}")
    return 1 if any(s.error for s in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
