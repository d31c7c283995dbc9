"""`--help` as a deployer reads it: whole command descriptions, and every setting `run` reads."""

from __future__ import annotations

from pathlib import Path

from bot.cli import main
from bot.config import Settings
from tests.test_cli import run_cli


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_top_level_help_shows_whole_descriptions(tmp_path: Path) -> None:
    result = run_cli(["--help"], {"COLUMNS": "80"}, tmp_path)
    assert result.returncode == 0, result.stderr
    commands = result.stdout.split("Commands:", 1)[1]
    assert "..." not in commands, commands
    for name, command in main.commands.items():
        first_sentence = command.get_short_help_str(limit=10_000)
        assert _flat(first_sentence) in _flat(commands), (name, commands)


def test_run_help_lists_every_setting_and_where_it_comes_from(tmp_path: Path) -> None:
    canary = "xoxb-help-canary-31337"
    (tmp_path / ".env").write_text("LINK_POLICY=button\nASANA_TOKEN=asana-help-canary-42\n")
    env = {"COLUMNS": "100", "POLL_BUDGET_PER_MINUTE": "120", "SLACK_BOT_TOKEN": canary}
    result = run_cli(["run", "--help"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert ".env" in out and "environment" in out
    for name in Settings.model_fields:  # generated, so none can be forgotten
        assert f"\n  {name} " in out, name
    rows = {
        line.split()[0]: _flat(line)
        for line in out.splitlines()
        if line.startswith("  ")
        and not line.startswith("   ")
        and line.split()[0] in Settings.model_fields
    }
    assert rows["POLL_BUDGET_PER_MINUTE"].startswith("POLL_BUDGET_PER_MINUTE [set in env]")
    assert "default 100.0" in rows["POLL_BUDGET_PER_MINUTE"]
    assert "[set in .env]" in rows["LINK_POLICY"] and "[set in .env]" in rows["ASANA_TOKEN"]
    assert "[set in env] required" in rows["SLACK_BOT_TOKEN"]
    assert "[not set] default 3000" in rows["PORT"]
    assert canary not in out and "asana-help-canary-42" not in out and "button" in out
