"""The test kit that tests/ and bench/ share: the bot process, its environment, waiting helpers
and the in-process scenario harness (`bot.testing.scenario`).

It imports nothing dev-only at import time, so `asana-export-bot demo` and the benchmarks can use it
from an installed package. The fakes it drives live in `bot.demo`.
"""

from bot.testing.env import TEST_ASANA_TOKEN, bot_environment
from bot.testing.process import FAST_WATCH, SIGNING_SECRET, BotProcess, console_script, free_port
from bot.testing.slack_view import (
    FINISHED_EVENT,
    command,
    event_posts,
    finished_posts,
    posts,
    slash,
    text_of,
)
from bot.testing.wait import async_wait_until, wait_until

__all__ = [
    "FAST_WATCH",
    "FINISHED_EVENT",
    "SIGNING_SECRET",
    "TEST_ASANA_TOKEN",
    "BotProcess",
    "async_wait_until",
    "bot_environment",
    "command",
    "console_script",
    "event_posts",
    "finished_posts",
    "free_port",
    "posts",
    "slash",
    "text_of",
    "wait_until",
]
