"""Logging that cannot leak secrets, as text or JSON lines that name their context.

Every record passes one filter (RedactFilter) that redacts its message, args, trace and context
fields; the formatters only lay the result out.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Literal

from bot import log_context

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Slack tokens of every kind and Slack signatures.
    (re.compile(r"\bx(?:ox[abprse]|app)-[A-Za-z0-9-]+"), "x***-<redacted>"),
    (re.compile(r"\bv0=[0-9a-f]{16,}"), "v0=<redacted>"),
    # Authorization headers however they are printed.
    (re.compile(r"(?i)(bearer\s+)[^\s'\",}]+"), r"\1<redacted>"),
    # Any URL's query string (presigned download links carry credentials there).
    # (Not one already redacted: a record may pass the filter twice, through two handlers.)
    (re.compile(r"(https?://[^\s?#<>|\"']+)\?(?!<redacted>)[^\s<>|\"']*"), r"\1?<redacted>"),
    # A download_url field in any dumped structure.
    (re.compile(r"(?i)(download_url['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"), r"\1<redacted>"),
]

#: What every pattern above needs in the text (a superset, any case): most log text has none,
#: and one search is cheaper than each pattern's. Context fields (ids) are most of the text.
_MAY_MATCH = re.compile(r"(?i)xox|xapp|v0=|bearer|https?://|download_url")

#: Libraries that dump request and response bodies (which carry links) at DEBUG.
_CHATTY = ("slack_sdk", "slack_bolt", "httpx", "httpcore", "aiohttp.access", "apscheduler")
#: Loggers whose library asks their own `level`, not `isEnabledFor`, before a debug line: left
#: NOTSET (0 <= DEBUG) they format every Web API request and response (blocks, headers) into a
#: line the handler then drops: 50 µs of CPU of a card post's 430 (one in nine), measured.
_OWN_LEVEL_ASKED = ("slack_sdk.web.async_base_client", "slack_sdk.web.base_client")
#: Libraries that log SQL statements with their parameters, or migration chatter: LOG_SQL only.
_SQL = ("sqlalchemy", "aiosqlite", "alembic")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove configured secret values and anything shaped like a token or a signed link."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "<redacted>")
    if _MAY_MATCH.search(text) is None:
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


#: Bolt warns this at every start when SLACK_BOT_TOKEN is in the environment: AsyncApp reads that
#: variable itself even though it is given our client. Nothing is misconfigured, so it is dropped.
#: (Text of slack_bolt.logger.messages.warning_client_prioritized_and_token_skipped; a test pins it.)
BOLT_TOKEN_NOTICE = "As you gave `client` as well, `token` will be unused."  # noqa: S105


class RedactFilter(logging.Filter):
    """The one place secrets and links leave a record, for every format: the message with its
    args, the exception and stack text, and every bound context field are redacted before any
    formatter sees them (so JSON escaping cannot hide a secret from the patterns).

    It also copies the bound context (bot.log_context) onto the record as `record.fields`.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "slack_bolt.App" and record.msg == BOLT_TOKEN_NOTICE:
            return False
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not stop the line, nor the caller
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = redact(message, self._secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = _plain.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self._secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self._secrets)
        # A line's own fields (`extra={"fields": {...}}`, e.g. an audit event) after the bound ones.
        given = getattr(record, "fields", None) or {}
        merged = {**log_context.current(), **{str(k): str(v) for k, v in given.items()}}
        record.fields = {k: redact(v, self._secrets) for k, v in merged.items()}
        return True


_plain = logging.Formatter()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value...`, one line per event. Newlines in a message are
    escaped (user input cannot forge a line); a trace follows on lines indented by two spaces,
    so every unindented line starts an event."""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{self.formatTime(record)} {record.levelname} {record.name}: "
            f"{_one_line(record.getMessage())}"
        )
        for key, value in (getattr(record, "fields", None) or {}).items():
            line += f" {key}={_one_line(value).replace(' ', '_')}"
        trace = _trace(self, record)
        return line + ("\n" + _indent(trace) if trace else "")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO-8601 UTC), level, logger, message, the bound fields,
    and `exc` holding the whole trace as one string."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        body: dict[str, object] = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in (getattr(record, "fields", {}) or {}).items():
            body.setdefault(key, value)
        trace = _trace(self, record)
        if trace:
            body["exc"] = trace
        return json.dumps(body, ensure_ascii=False, default=str)


def _trace(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    parts = []
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return "\n".join(parts)


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


LogFormat = Literal["text", "json"]


def build_handler(
    log_format: LogFormat = "text", secrets: Iterable[str] = (), stream: IO[str] | None = None
) -> logging.Handler:
    """A stderr handler whose records pass the one redacting filter, then the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactFilter(secrets))
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    return handler


def configure_logging(
    level: str,
    secrets: Iterable[str] = (),
    *,
    log_sql: bool = False,
    log_format: LogFormat = "text",
) -> None:
    """Send redacted lines to stderr in `log_format`; keep body-dumping libraries at WARNING or
    quieter, and SQL libraries too unless `log_sql` (then they log at `level`, still redacted)."""
    handler = build_handler(log_format, secrets)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    numeric = logging.getLevelName(level)
    for name in (*_CHATTY, *_OWN_LEVEL_ASKED):
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    for name in _SQL:
        logging.getLogger(name).setLevel(numeric if log_sql else max(numeric, logging.WARNING))
