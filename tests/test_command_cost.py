"""The cost of a command does not grow with the export's watchers (issue 8), on the real process.

Runs the `command cost` benchmark at its smoke size: the bot's CPU per `watch` command at 1 and
at 10,000 watchers of one export, and checks that the row reports both figures. Speed is
measured by the benchmark, not asserted here (the full run is in docs/benchmarks.md); the
behaviour behind it, counting watchers with COUNT on partial indexes instead of loading every
row, is checked in tests/test_store.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import command_cost
from bench.common import Context, CpuReading, cpu_between, cpu_reading


@pytest.mark.timeout(120)
def test_command_cost_row_reports_1_and_10000_watchers(tmp_path: Path) -> None:
    section = command_cost.run(Context(size="smoke", workdir=tmp_path, verbose=False))
    assert section.error is None
    for row in section.rows:
        assert row.ours is not None and row.baseline is not None
        print(f"{row.figure}: {row.ours:.1f} ms vs {row.baseline:.1f} ms")
        assert row.ratio is not None and row.ratio > 0, row
    assert any("Round by round" in note for note in section.notes)


def test_cpu_between_sums_the_threads_and_falls_back_to_ticks_when_one_ended() -> None:
    before = CpuReading(ticks=1.00, threads={10: 0.500, 11: 0.200})
    grown = CpuReading(ticks=1.10, threads={10: 0.5625, 11: 0.2125, 12: 0.0125})
    assert cpu_between(before, grown) == pytest.approx(0.0875)  # a new thread counts from 0
    ended = CpuReading(ticks=1.10, threads={10: 0.5625})
    assert cpu_between(before, ended) == pytest.approx(0.10)  # thread 11's time left with it
    assert cpu_between(CpuReading(1.0, None), CpuReading(1.2, None)) == pytest.approx(0.2)


def test_cpu_reading_sees_this_process_work() -> None:
    start = cpu_reading(os.getpid())
    assert start is not None
    total = 0
    while (now := cpu_reading(os.getpid())) is not None and cpu_between(start, now) < 0.05:
        total += sum(range(10_000))
    assert now is not None and cpu_between(start, now) >= 0.05 and total > 0
