"""manifest.yml is a valid Slack app manifest that matches what the code needs."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "tests" / "reference" / "slack-manifest.schema.1.0.0.json"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load((ROOT / "manifest.yml").read_text())


def test_manifest_validates_against_slack_schema(manifest: dict) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.validate(manifest, schema)


def test_manifest_declares_what_the_bot_uses(manifest: dict) -> None:
    commands = manifest["features"]["slash_commands"]
    assert [c["command"] for c in commands] == ["/asana-export"]
    assert commands[0]["description"] and commands[0]["usage_hint"]
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"commands", "chat:write"} <= scopes
    # conversations.history with metadata, for exactly-once recovery, in every kind of channel
    assert {"channels:history", "groups:history", "im:history", "mpim:history"} <= scopes
    # conversations.info, for LINK_POLICY=private
    assert {"channels:read", "groups:read", "im:read", "mpim:read"} <= scopes
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["features"]["bot_user"]["display_name"]


def test_the_packaged_scope_list_is_the_manifests(manifest: dict) -> None:
    """`doctor` checks granted scopes against bot.slack_scopes (manifest.yml is not in the wheel)."""
    from bot.slack_scopes import BOT_SCOPE_NAMES, BOT_SCOPES, Need

    assert list(BOT_SCOPE_NAMES) == manifest["oauth_config"]["scopes"]["bot"]
    essential = {s.name for s in BOT_SCOPES if s.need is Need.ESSENTIAL}
    assert essential == {"commands", "chat:write"}
    assert all(s.buys for s in BOT_SCOPES)
    history = [s for s in BOT_SCOPES if s.name.endswith(":history")]
    assert all(s.need is Need.HELPFUL and "no duplicate" in s.buys for s in history)


def test_the_manifest_enables_the_app_home_tab_and_its_event(manifest: dict) -> None:
    """The App Home dashboard needs the Home tab and the app_home_opened bot event."""
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True
    assert "app_home_opened" in manifest["settings"]["event_subscriptions"]["bot_events"]
