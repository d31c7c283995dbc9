"""The bot's environment for talking to the fakes, built in one place for tests and benchmarks."""

from __future__ import annotations

from typing import Any

from bot.testing.process import SIGNING_SECRET

#: Recognisable, so leak checks can grep logs and databases for it.
TEST_ASANA_TOKEN = "asana-canary-token-6f1d2c"


def bot_environment(
    asana: Any,
    slack: Any,
    database_url: str,
    *,
    asana_token: str = TEST_ASANA_TOKEN,
    socket_mode: bool = False,
    **extra: str,
) -> dict[str, str]:
    """Settings (as environment variables) for a bot that talks to `asana` and `slack`.

    HTTP mode unless `socket_mode`: then the app-level token is set and the signing secret is not.
    `extra` overrides or adds settings (e.g. `ASANA_MAX_RETRY_SECONDS="2"`).
    """
    env = {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": "" if socket_mode else SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "SLACK_APP_TOKEN": slack.app_token if socket_mode else "",
        "ASANA_TOKEN": asana_token,
        "ASANA_BASE_URL": asana.base_url,
        "DATABASE_URL": database_url,
        "ASANA_MAX_RETRY_SECONDS": "8",
    }
    env.update(extra)
    return env
