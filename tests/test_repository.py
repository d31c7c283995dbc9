"""The repository is self-contained: tests read only files inside it, and its licence is declared."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "tests" / "reference"
#: A path that climbs out of the repository, or an absolute path into the machine's work area.
_OUTSIDE = re.compile(
    r"""parents\[\s*[2-9]\s*\]|ROOT\.parent|["']/work/|\.\./shared|shared/reference"""
)


def test_no_code_reads_files_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for folder in ("tests", "bench", "bot", "handlers")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _OUTSIDE.search(line)
    ]
    assert offenders == []


def test_vendored_reference_files_are_present_with_their_source() -> None:
    notes = (REFERENCE / "README.md").read_text()
    for name in ("asana_oas.organization_exports.yaml", "slack-manifest.schema.1.0.0.json"):
        assert (REFERENCE / name).stat().st_size > 1000
        assert name in notes
    assert "Apache License 2.0" in notes


def test_licence_file_matches_pyproject_spdx_expression() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"  # an SPDX expression, not the deprecated table
    assert project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
