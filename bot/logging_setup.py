"""Logging that cannot leak secrets: every formatted line (tracebacks included) is redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Slack tokens of every kind and Slack signatures.
    (re.compile(r"\bx(?:ox[abprse]|app)-[A-Za-z0-9-]+"), "x***-<redacted>"),
    (re.compile(r"\bv0=[0-9a-f]{16,}"), "v0=<redacted>"),
    # Authorization headers however they are printed.
    (re.compile(r"(?i)(bearer\s+)[^\s'\",}]+"), r"\1<redacted>"),
    # Any URL's query string (presigned download links carry credentials there).
    (re.compile(r"(https?://[^\s?#<>|\"']+)\?[^\s<>|\"']*"), r"\1?<redacted>"),
    # A download_url field in any dumped structure.
    (re.compile(r"(?i)(download_url['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"), r"\1<redacted>"),
]

#: Libraries that dump request and response bodies (which carry links) at DEBUG.
_CHATTY = ("slack_sdk", "slack_bolt", "httpx", "httpcore", "aiohttp.access", "apscheduler")
#: Libraries that log SQL statements with their parameters, or migration chatter: LOG_SQL only.
_SQL = ("sqlalchemy", "aiosqlite", "alembic")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove configured secret values and anything shaped like a token or a signed link."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "<redacted>")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then redacts the whole line, so exceptions and args are covered too."""

    def __init__(self, fmt: str, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt)
        self._secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self._secrets)


def configure_logging(level: str, secrets: Iterable[str] = (), *, log_sql: bool = False) -> None:
    """Send redacted lines to stderr; keep body-dumping libraries at WARNING or quieter, and
    SQL libraries too unless `log_sql` (then they log at `level`, still redacted)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets)
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    numeric = logging.getLevelName(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    for name in _SQL:
        logging.getLogger(name).setLevel(numeric if log_sql else max(numeric, logging.WARNING))
