"""`.env.example` is what the README tells deployers to copy: it must load as the bot loads it."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from bot.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / ".env.example"


def _names(text: str) -> set[str]:
    """Every variable the file sets or shows commented out."""
    return set(re.findall(r"^#?\s?([A-Z][A-Z0-9_]+)=", text, flags=re.M))


def test_every_variable_in_the_example_is_a_setting() -> None:
    names = _names(EXAMPLE.read_text())
    assert {"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "ASANA_TOKEN", "DATABASE_URL"} <= names
    assert names <= set(Settings.model_fields), names - set(Settings.model_fields)


def test_the_example_loads_as_a_dot_env_file_with_no_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in Settings.model_fields:  # only the file speaks
        monkeypatch.delenv(name, raising=False)
    shutil.copy(EXAMPLE, tmp_path / ".env")
    monkeypatch.chdir(tmp_path)
    settings = load_settings("run")  # raises SettingsError listing any problem
    assert settings.socket_mode  # the example is the one-machine Socket Mode setup
    assert settings.SLACK_BOT_TOKEN is not None
    assert settings.SLACK_BOT_TOKEN.get_secret_value().startswith("xoxb-")
    assert settings.DATABASE_URL == "sqlite:///asana-export-bot.db"
    assert not os.path.exists(tmp_path / "asana-export-bot.db")  # loading creates nothing
