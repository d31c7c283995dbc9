"""Socket Mode while Slack is unreachable: one log line per failed attempt, SIGTERM still works.

The real `asana-export-bot run` in Socket Mode, pointed at a Slack API on a closed port (the
connection URL cannot even be asked for) or at a fake Slack that refuses every websocket.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import httpx

from bot.demo.fake_slack import FakeSlack
from bot.testing import BotProcess, free_port, wait_until
from tests.test_faults import healthy

#: Any line about a failed connection, ours or slack_sdk's ("Failed to connect ... Retrying").
ANY_FAILURE = re.compile(r"(?i)(could not|failed to) connect")
#: Ours: one WARNING line with the cause and the wait before the next attempt.
ONE_LINE = re.compile(
    r"WARNING bot\.socket_mode: Socket Mode: could not connect to Slack \(.+\);"
    r" attempt \d+ failed, next in [0-9.]+ s( replica=\S+)?$"
)
STOP_WITHIN = 10.0


def failed_attempts(bot: BotProcess) -> list[str]:
    return [line for line in bot.logs().splitlines() if ANY_FAILURE.search(line)]


def assert_one_line_each(bot: BotProcess) -> None:
    logs = bot.logs()
    lines = failed_attempts(bot)
    assert "Traceback" not in logs, f"{logs.count('Traceback')} tracebacks; {lines[:2]}"
    assert lines and all(ONE_LINE.search(line) for line in lines), lines[:3]


def sigterm_and_time(bot: BotProcess) -> tuple[int | None, float]:
    """SIGTERM, then how long the process took to exit (SIGKILL after the bound)."""
    assert bot.proc is not None
    bot.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    try:
        code = bot.proc.wait(STOP_WITHIN + 5)
    except subprocess.TimeoutExpired:
        bot.kill()
        return None, time.monotonic() - sent
    return code, time.monotonic() - sent


def socket_env(bot_env: dict[str, str], fake_slack: FakeSlack) -> dict[str, str]:
    return {**bot_env, "SLACK_APP_TOKEN": fake_slack.app_token, "SLACK_SIGNING_SECRET": ""}


def test_sigterm_stops_a_bot_that_cannot_reach_slack(
    bot_env: dict[str, str], fake_slack: FakeSlack, tmp_path: Path
) -> None:
    closed = free_port()
    env = {**socket_env(bot_env, fake_slack), "SLACK_API_URL": f"http://127.0.0.1:{closed}/api/"}
    bot = BotProcess(tmp_path, env).launch()
    try:
        wait_until(lambda: len(failed_attempts(bot)) >= 2, 40, "two failed attempts logged")
        code, took = sigterm_and_time(bot)
    finally:
        bot.kill()
    logs = bot.logs()
    print(f"stopped {took:.2f}s after SIGTERM; {len(failed_attempts(bot))} failed attempts")
    assert code == 0 and took < STOP_WITHIN, f"exit {code} {took:.1f}s after SIGTERM"
    assert_one_line_each(bot)
    waits = [float(w) for w in re.findall(r"next in ([0-9.]+) s", logs)]
    assert len(waits) >= 2 and waits[1] > waits[0], waits  # it backs off
    assert "shutting down" in logs


def test_refused_websocket_is_one_line_per_attempt_then_recovers(
    bot_env: dict[str, str], fake_slack: FakeSlack, tmp_path: Path
) -> None:
    fake_slack.refuse_sockets = True
    bot = BotProcess(tmp_path, socket_env(bot_env, fake_slack)).launch()
    try:
        wait_until(lambda: len(failed_attempts(bot)) >= 2, 30, "two failed attempts logged")
        assert_one_line_each(bot)
        with_lines = len(bot.logs().splitlines())
        fake_slack.refuse_sockets = False
        fake_slack.wait_for_socket_connection(timeout=15)
        wait_until(lambda: _healthy_now(bot), 15, "healthy once connected")
        assert healthy(bot)
        answer = fake_slack.send_slash_command(text="help", timeout=3.0)
        assert answer["response_type"] == "ephemeral"
        assert len(bot.logs().splitlines()) > with_lines
        code, took = sigterm_and_time(bot)
    finally:
        bot.kill()
    assert_one_line_each(bot)
    assert code == 0 and took < STOP_WITHIN, (code, took)


def _healthy_now(bot: BotProcess) -> bool:
    try:
        return httpx.get(bot.health_url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
