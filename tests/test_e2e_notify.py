"""Every Slack post goes through one notifier: the slash command's card too.

Through the real bot process: a status card that Slack refuses for a dead token starts the
token pause (shown by /healthz), and while it lasts a new watch's card is not even tried.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.demo.signing import post_slash_command
from bot.testing.process import FAST_WATCH, SIGNING_SECRET, BotProcess

GIDS = ("1200000000000601", "1200000000000602")


def command(bot: BotProcess, slack: FakeSlack, text: str, channel: str) -> dict:
    response = post_slash_command(
        bot.events_url,
        secret=SIGNING_SECRET,
        text=text,
        channel_id=channel,
        response_url=slack.new_response_url(),
    )
    assert response.status == 200, response.body_text
    assert response.elapsed < 3.0
    return json.loads(response.body_text)


def test_a_slash_commands_card_starts_the_token_pause_and_then_respects_it(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot_env: dict[str, str], tmp_path: Path
) -> None:
    for gid in GIDS:
        fake_asana.set_export(gid, "pending")
    bot = BotProcess(tmp_path, {**bot_env, **FAST_WATCH, "LINK_POLICY": "anywhere"}).start()
    try:
        assert httpx.get(bot.health_url).json()["slack_paused"] is None
        command(bot, fake_slack, "list", "C1")  # Bolt asks auth.test once, then remembers
        fake_slack.revoke_token()  # after start-up: the app was uninstalled while running

        first = command(bot, fake_slack, GIDS[0], "C1")
        assert first["response_type"] == "ephemeral" and "token_revoked" in first["text"]
        tried = len(fake_slack.calls_to("chat.postMessage"))
        assert tried >= 1
        paused = fake_slack.wait_for(
            lambda: httpx.get(bot.health_url).json()["slack_paused"], timeout=5
        )
        assert paused == "token_revoked"

        second = command(bot, fake_slack, GIDS[1], "C2")
        assert second["response_type"] == "ephemeral" and "token_revoked" in second["text"]
        assert len(fake_slack.calls_to("chat.postMessage")) == tried, "posted during the pause"
    finally:
        bot.stop()
    assert "xoxb" not in bot.logs()
