"""Logs as an operator reads them: LOG_FORMAT=text|json, one event per line with its context,
one redacting filter for both formats, and a quiet start; driven through the real process."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import log_context
from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.demo.signing import post_slash_command
from bot.logging_setup import BOLT_TOKEN_NOTICE, build_handler, configure_logging
from bot.testing.process import SIGNING_SECRET, BotProcess
from tests.conftest import ASANA_TOKEN

LINK_CANARY = "https://canary.example.test/export.zip?X-Amz-Signature=LOGCANARY77"
FAILING_GID = "1200000000000404"
WATCHED_GID = "1200000000000321"
TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
)


# --- the real process ---------------------------------------------------------------------


def _run_flow(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot_env: dict[str, str], tmp_path: Path, fmt: str
) -> tuple[str, FakeSlack]:
    """Start at INFO in `fmt`, run a failing lookup whose Asana error carries the token and a
    signed link, and a lookup that starts a watch; return the whole log."""
    env = {**bot_env, "LOG_FORMAT": fmt, "LOG_LEVEL": "INFO", "ASANA_MAX_RETRY_SECONDS": "1"}
    bot = BotProcess(tmp_path, env, name=f"bot-{fmt}").start()
    try:
        fake_asana.fail(500, gid=FAILING_GID, times=50, phrase=f"oops {ASANA_TOKEN} {LINK_CANARY}")
        fake_asana.set_export(WATCHED_GID, "started", download_url=LINK_CANARY)
        for gid, user, channel in (
            (FAILING_GID, "U0FAIL", "C0FAIL"),
            (WATCHED_GID, "U0OK", "C0OK"),
        ):
            reply = post_slash_command(
                bot.events_url,
                secret=SIGNING_SECRET,
                text=gid,
                response_url=fake_slack.new_response_url(),
                user_id=user,
                channel_id=channel,
            )
            assert reply.status == 200, reply.body_text
        # The failing lookup logs each retry; wait until its last one and the watch are logged.
        fake_slack.wait_for(
            lambda: "audit watch_started" in bot.logs() and "giving up" in bot.logs(), timeout=20
        )
    finally:
        bot.stop()
    return bot.logs(), fake_slack


def _assert_no_canary(logs: str, fake_slack: FakeSlack) -> None:
    assert ASANA_TOKEN not in logs
    assert "LOGCANARY77" not in logs
    assert fake_slack.bot_token not in logs and SIGNING_SECRET not in logs


def test_json_logs_one_object_per_line_with_context_and_no_secrets(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot_env: dict[str, str], tmp_path: Path
) -> None:
    logs, slack = _run_flow(fake_asana, fake_slack, bot_env, tmp_path, "json")
    _assert_no_canary(logs, slack)
    records = [json.loads(line) for line in logs.splitlines()]  # every line is one JSON object
    assert records
    replicas = {r.get("replica") for r in records}
    assert len(replicas) == 1 and None not in replicas, replicas
    for r in records:
        assert {"ts", "level", "logger", "message"} <= r.keys()
        assert r["ts"].endswith("Z") and "T" in r["ts"]

    failing = [r for r in records if r.get("gid") == FAILING_GID]
    watched = [r for r in records if r.get("gid") == WATCHED_GID]
    assert failing and watched, logs[-3000:]
    for lines, user, channel in ((failing, "U0FAIL", "C0FAIL"), (watched, "U0OK", "C0OK")):
        assert {(r["user"], r["channel"], r["team"]) for r in lines} == {(user, channel, "T0001")}
        assert len({r["request_id"] for r in lines}) == 1, "one id for all of a request's lines"
    assert failing[0]["request_id"] != watched[0]["request_id"]
    assert any("<redacted>" in r["message"] for r in failing), "the canaries were logged, redacted"


def test_text_logs_one_event_per_line_with_context_and_no_secrets(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot_env: dict[str, str], tmp_path: Path
) -> None:
    logs, slack = _run_flow(fake_asana, fake_slack, bot_env, tmp_path, "text")
    _assert_no_canary(logs, slack)
    lines = logs.splitlines()
    assert lines
    for line in lines:
        assert TEXT_LINE.match(line) and " replica=" in line, line  # no forged or bare lines
    failing = [line for line in lines if f"gid={FAILING_GID}" in line]
    watched = [line for line in lines if f"gid={WATCHED_GID}" in line]
    assert failing and watched, logs[-3000:]
    for group, user, channel in ((failing, "U0FAIL", "C0FAIL"), (watched, "U0OK", "C0OK")):
        for line in group:
            assert f" user={user}" in line and f" channel={channel}" in line
            assert re.search(r" request_id=[0-9a-f]{12}\b", line), line


def test_start_at_info_is_quiet(bot_env: dict[str, str], tmp_path: Path) -> None:
    """No Alembic chatter, no Bolt notice about `token` (SLACK_BOT_TOKEN is in the environment,
    as in every real deployment)."""
    bot = BotProcess(tmp_path, {**bot_env, "LOG_LEVEL": "INFO"}).start()
    bot.stop()
    logs = bot.logs()
    assert "serving HTTP" in logs
    assert "alembic" not in logs.lower() and "will be unused" not in logs, logs
    assert "WARNING" not in logs and "ERROR" not in logs, logs


# --- the filter and formatters ----------------------------------------------------------------

SECRET = "xoxb-1111-2222-abcdefSECRET"


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, dict[str, io.StringIO]]]:
    """A logger writing to one handler per format, both built as the bot builds them."""
    streams = {fmt: io.StringIO() for fmt in ("text", "json")}
    logger = logging.getLogger("tests.logs")
    handlers = [build_handler(fmt, [SECRET], stream) for fmt, stream in streams.items()]  # type: ignore[arg-type]
    for handler in handlers:
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    log_context.set_replica("host:1:abc")
    try:
        yield logger, streams
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
        log_context.set_replica(None)


def _crash() -> None:
    raise RuntimeError(f"boom with {SECRET} and {LINK_CANARY}")


def test_one_filter_redacts_message_args_trace_and_fields_in_both_formats(
    capture: tuple[logging.Logger, dict[str, io.StringIO]],
) -> None:
    logger, streams = capture
    with log_context.bind(user=f"U1 {SECRET}", gid="42"):
        logger.info("token %s link %s", SECRET, LINK_CANARY)
        logger.info(f"in the message: {SECRET} \u00e9 {LINK_CANARY.replace('https', 'http')}")
        logger.warning("user text\n2026-01-01 00:00:00,000 ERROR forged: line")
        try:
            _crash()
        except RuntimeError:
            logger.exception("tick failed")
    for fmt, stream in streams.items():
        out = stream.getvalue()
        assert "abcdefSECRET" not in out and "LOGCANARY77" not in out, (fmt, out)
        assert out.count("Traceback") == 1, (fmt, out)
    records = [json.loads(line) for line in streams["json"].getvalue().splitlines()]
    assert len(records) == 4, "a trace is one field of one line"
    crash = records[-1]
    assert crash["level"] == "ERROR" and crash["message"] == "tick failed"
    assert crash["exc"].startswith("Traceback") and "RuntimeError" in crash["exc"]
    assert crash["gid"] == "42" and crash["replica"] == "host:1:abc"
    assert "<redacted>" in crash["user"]
    text = streams["text"].getvalue().splitlines()
    events = [line for line in text if not line.startswith("  ")]
    assert len(events) == 4 and all(TEXT_LINE.match(line) for line in events), text
    assert "user text\\n2026-01-01" in events[2], "a newline in a message cannot forge a line"
    assert "gid=42" in events[-1] and "replica=host:1:abc" in events[-1]


def test_bound_fields_follow_tasks_and_end_with_the_block() -> None:
    import asyncio

    seen: dict[str, Any] = {}

    async def child(name: str) -> None:
        await asyncio.sleep(0)
        seen[name] = log_context.current()

    async def main() -> None:
        with log_context.bind(gid="1", user="U1"):
            task = asyncio.ensure_future(child("a"))
        await task
        with log_context.bind(gid="2"):
            await child("b")
        await child("c")

    asyncio.run(main())
    assert seen == {"a": {"user": "U1", "gid": "1"}, "b": {"gid": "2"}, "c": {}}


def test_bad_format_args_do_not_break_the_caller(
    capture: tuple[logging.Logger, dict[str, io.StringIO]],
) -> None:
    logger, streams = capture
    logger.info("two %s %s", "only-one")
    assert "two" in streams["json"].getvalue() and "two" in streams["text"].getvalue()


def test_the_dropped_bolt_notice_is_bolts_text() -> None:
    from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped

    assert warning_client_prioritized_and_token_skipped() == BOLT_TOKEN_NOTICE


def test_request_id_is_a_hash_of_signed_headers_or_random() -> None:
    signed = {"X-Slack-Request-Timestamp": "1700000000", "X-Slack-Signature": "v0=" + "a" * 64}
    assert log_context.request_id(signed) == log_context.request_id(signed)
    assert "aaaa" not in log_context.request_id(signed)
    assert log_context.request_id({}) != log_context.request_id({})


@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
def test_slack_sdk_formats_no_request_dumps_it_would_drop(level: str) -> None:
    """slack_sdk asks its client logger's own `level` (not isEnabledFor) before building a
    debug line of every request and response; NOTSET would pass that test at any LOG_LEVEL."""
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    levels = {
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    try:
        configure_logging(level)
        for name in ("slack_sdk.web.async_base_client", "slack_sdk.web.base_client"):
            logger = logging.getLogger(name)
            assert logger.level > logging.DEBUG, name
            assert logger.level == max(logging.getLevelName(level), logging.WARNING)
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        for name, logger in logging.root.manager.loggerDict.items():
            if isinstance(logger, logging.Logger):
                logger.setLevel(levels.get(name, logging.NOTSET))
