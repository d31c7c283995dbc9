"""The benchmark suite runs end to end at its tiny size and writes a table (no speed is asserted).

It guards the suite against rot: a fake, the bot's start-up or a helper process changing under it
shows up here, not on the day someone needs the figures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import COLUMNS

REPO_ROOT = Path(__file__).resolve().parent.parent


#: The whole suite at smoke size takes about 35 s on an idle 2-core machine; the margin is for a
#: busy one (this guards against hangs and rot, not speed).
@pytest.mark.timeout(120)
def test_smoke_size_writes_a_table(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--size", "smoke", "--quiet", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    text = out.read_text()
    assert "| " + " | ".join(COLUMNS) + " |" in text
    for heading in ("## Machine", "## How to reproduce", "## Notes"):
        assert heading in text
    assert "python -m bench --size smoke" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    benchmarks = {line.split("|")[1].strip() for line in rows[1:]}
    assert {
        "ack latency",
        "Asana client",
        "start-up",
        "polling",
        "coalescing",
        "notification latency",
        "command cost",
        "store",
        "archive",
    } <= benchmarks
    assert "(failed:" not in text
