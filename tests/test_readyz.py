"""GET /readyz on the real `asana-export-bot run`: 503 naming what went away, 200 once it is back.

The SQLite file renamed away and back (the bot's file check fails, then passes again), Slack's
auth.test failing and then answering (re-checked every SLACK_CHECK_SECONDS), and in Socket Mode
the websocket refused and then connected. /healthz stays 200 throughout: the process is alive.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx

from bot.demo.fake_slack import FakeSlack
from bot.testing.process import FAST_WATCH, BotProcess
from tests.test_faults import wait_until

#: Slack is re-checked this often here (default 60 s).
FAST_CHECK = {**FAST_WATCH, "SLACK_CHECK_SECONDS": "0.3"}
#: How soon /readyz must follow a change (a few checks, ticks and scrapes on a busy machine).
WITHIN = 10.0


def readyz(bot: BotProcess) -> tuple[int, dict[str, Any]]:
    assert bot.proc is not None and bot.proc.poll() is None, "the bot process exited"
    response = httpx.get(bot.ready_url, timeout=8)
    return response.status_code, response.json()


def alive(bot: BotProcess) -> bool:
    return httpx.get(bot.health_url, timeout=3).status_code == 200


def wait_ready(bot: BotProcess, what: str) -> dict[str, Any]:
    started = time.monotonic()
    body = wait_until(lambda: (r := readyz(bot))[0] == 200 and r[1], WITHIN, what)
    print(f"{what}: {time.monotonic() - started:.2f}s")
    assert body["ready"] is True and body["failing"] == [], body
    return body


def wait_not_ready(bot: BotProcess, part: str, what: str) -> dict[str, Any]:
    started = time.monotonic()
    body = wait_until(lambda: (r := readyz(bot))[0] == 503 and r[1], WITHIN, what)
    print(f"{what}: {time.monotonic() - started:.2f}s, {body['parts'][part]}")
    assert body["ready"] is False and body["failing"] == [part], body
    assert body["parts"][part]["ok"] is False
    assert alive(bot), "/healthz is liveness: 200 while the process serves"
    return body


def test_readyz_follows_the_database_and_slack(
    fake_slack: FakeSlack, bot_env: dict[str, str], tmp_path: Path
) -> None:
    db = tmp_path / "bot.db"
    bot = BotProcess(tmp_path, {**bot_env, **FAST_CHECK}).start()
    try:
        body = wait_ready(bot, "ready after start-up")
        assert set(body["parts"]) == {"database", "scheduler", "slack"}, body
        assert "websocket" not in body["parts"], "HTTP mode has no websocket"
        assert body["watches"] == 0 and body["slack_paused"] is None, body

        away = tmp_path / "bot.db.away"
        os.rename(db, away)
        body = wait_not_ready(bot, "database", "503 with the database renamed away")
        assert "database file is gone" in body["parts"]["database"]["detail"], body
        assert str(tmp_path) not in str(body), "the path stays in the log"
        os.rename(away, db)
        wait_ready(bot, "200 with the database back")

        fake_slack.fail("auth.test", "invalid_auth", times=None)
        body = wait_not_ready(bot, "slack", "503 with auth.test failing")
        assert "invalid_auth" in body["parts"]["slack"]["detail"], body
        fake_slack.clear_faults()
        wait_ready(bot, "200 with auth.test answering again")
    finally:
        bot.stop()
    assert "Traceback" not in bot.logs()


def test_readyz_names_the_websocket_until_socket_mode_connects(
    fake_slack: FakeSlack, bot_env: dict[str, str], tmp_path: Path
) -> None:
    fake_slack.refuse_sockets = True
    env = {
        **bot_env,
        **FAST_CHECK,
        "SLACK_APP_TOKEN": fake_slack.app_token,
        "SLACK_SIGNING_SECRET": "",
    }
    bot = BotProcess(tmp_path, env).launch()
    try:
        wait_until(lambda: _answers(bot), 20, "the bot serves HTTP")
        body = wait_not_ready(bot, "websocket", "503 while the fake refuses websockets")
        assert body["parts"]["websocket"]["detail"] == "not connected", body
        fake_slack.refuse_sockets = False
        fake_slack.wait_for_socket_connection(timeout=20)
        wait_ready(bot, "200 once connected")
    finally:
        bot.stop()
    assert "Traceback" not in bot.logs()


def _answers(bot: BotProcess) -> bool:
    assert bot.proc is not None and bot.proc.poll() is None, bot.logs()
    try:
        return alive(bot)
    except httpx.HTTPError:
        return False
