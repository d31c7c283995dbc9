"""The long-lived services one bot process shares between its listeners and its scheduler."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bot.asana import AsanaClient
from bot.config import Settings


def utc_now() -> datetime:
    """The real clock; tests and pure code receive `now` instead of calling this."""
    return datetime.now(UTC)


@dataclass
class Runtime:
    """Settings plus the pooled clients, built once per process in `bot.app`."""

    settings: Settings
    asana: AsanaClient
    now: Callable[[], datetime] = field(default=utc_now)
