"""The cost of a command does not grow with the export's watchers (issue 8), on the real process.

Runs the `command cost` benchmark at its smoke size: the bot's CPU per `watch` command at 1 and
at 10,000 watchers of one export, and checks that the row reports both figures. Speed is
measured by the benchmark, not asserted here (the full run is in docs/benchmarks.md); the
behaviour behind it, counting watchers with COUNT on partial indexes instead of loading every
row, is checked in tests/test_store.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import command_cost
from bench.common import Context


@pytest.mark.timeout(120)
def test_command_cost_row_reports_1_and_10000_watchers(tmp_path: Path) -> None:
    section = command_cost.run(Context(size="smoke", workdir=tmp_path, verbose=False))
    assert section.error is None
    for row in section.rows:
        assert row.ours is not None and row.baseline is not None
        print(f"{row.figure}: {row.ours:.1f} ms vs {row.baseline:.1f} ms")
        assert row.ratio is not None and row.ratio > 0, row
