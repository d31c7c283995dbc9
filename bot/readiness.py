"""Readiness (/readyz): may a load balancer send this replica Slack's requests right now?

Ready when every part is: the database answers, the scheduler runs (its tick ran within a few
TICK_SECONDS), Slack accepted the bot token at the last check (auth.test at start-up, then every
SLACK_CHECK_SECONDS) and posting is not paused for a dead token, and in Socket Mode the websocket
is connected. `judge` is pure; `Readiness` gathers the facts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError

from bot.dbfile import DatabaseUnavailable

if TYPE_CHECKING:
    from apscheduler.schedulers.base import BaseScheduler

    from bot.runtime import Runtime
    from bot.watcher import Watcher

log = logging.getLogger(__name__)

#: How long /readyz waits for the database, and the periodic auth.test for Slack.
DB_TIMEOUT = 2.0
SLACK_TIMEOUT = 10.0
#: The tick is late (the scheduler is stuck) after this many TICK_SECONDS, and never sooner
#: than STALE_FLOOR seconds (an event loop busy for a moment is not a dead scheduler).
STALE_TICKS = 3
STALE_FLOOR = 5.0


@dataclass(frozen=True, slots=True)
class Part:
    """One thing readiness depends on, whether it is fine, and a short, public reason."""

    name: str
    ok: bool
    detail: str


def judge(parts: list[Part]) -> tuple[bool, dict[str, Any]]:
    """Ready iff every part is; the body names each part and, first, the failing ones."""
    failing = [p.name for p in parts if not p.ok]
    return not failing, {
        "ready": not failing,
        "failing": failing,
        "parts": {p.name: {"ok": p.ok, "detail": p.detail} for p in parts},
    }


def scheduler_part(running: bool, since_tick: float, tick_seconds: float) -> Part:
    """The scheduler runs and started a tick within a few TICK_SECONDS."""
    if not running:
        return Part("scheduler", False, "not running")
    late = max(STALE_TICKS * tick_seconds, STALE_FLOOR)
    if since_tick > late:
        return Part("scheduler", False, f"no tick for {since_tick:.0f} s")
    return Part("scheduler", True, f"last tick {since_tick:.1f} s ago")


class SlackCheck:
    """Whether Slack accepted the bot token when last asked (auth.test)."""

    def __init__(self, runtime: Runtime, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._rt = runtime
        self._clock = clock
        self.verified = False
        self.detail = "not checked yet"
        self.checked_at: float | None = None

    def record(self, auth: dict[str, Any] | None, error: str | None = None) -> None:
        """Keep auth.test's outcome: its answer, or None and why it failed."""
        self.checked_at = self._clock()
        self.verified = auth is not None
        self.detail = "auth.test ok" if auth is not None else f"auth.test failed: {error}"

    async def run(self) -> None:
        """Ask auth.test again (a scheduler job, every SLACK_CHECK_SECONDS). Never raises."""
        was = self.verified
        try:
            response = await asyncio.wait_for(self._rt.slack.auth_test(), SLACK_TIMEOUT)
        except SlackApiError as exc:
            self.record(None, str(exc.response.get("error") or "unknown_error"))
        except (aiohttp.ClientError, OSError) as exc:
            self.record(
                None, "Slack unreachable" if not isinstance(exc, TimeoutError) else "timeout"
            )
        except Exception as exc:
            self.record(None, type(exc).__name__)
        else:
            auth = dict(response.data) if isinstance(response.data, dict) else {}
            self._rt.installation.remember(auth)
            self.record(auth)
        if was and not self.verified:
            log.warning("Slack check failed (%s): this replica is not ready", self.detail)
        elif self.verified and not was:
            log.info("Slack check passed: the bot token is verified")

    def part(self) -> Part:
        status = self._rt.notify.status()
        if status.paused:
            return Part(
                "slack", False, f"posting paused: Slack rejected the token ({status.reason})"
            )
        if not self.verified:
            return Part("slack", False, self.detail)
        assert self.checked_at is not None
        return Part("slack", True, f"{self.detail} {self._clock() - self.checked_at:.0f} s ago")


class Readiness:
    """Gathers each part's state for /readyz."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        scheduler: BaseScheduler,
        watcher: Watcher,
        slack: SlackCheck,
        websocket: Callable[[], Awaitable[bool]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rt = runtime
        self._scheduler = scheduler
        self._watcher = watcher
        self._slack = slack
        self._websocket = websocket
        self._clock = clock
        self._started = clock()

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """(ready, body): every part's state, asked now, and the active watches if counted."""
        watches: list[int] = []
        parts = [await self._database(watches)]
        ticked = self._watcher.ticked_at
        since = self._clock() - (ticked if ticked is not None else self._started)
        parts.append(scheduler_part(self._scheduler.running, since, self._rt.settings.TICK_SECONDS))
        parts.append(self._slack.part())
        if self._websocket is not None:
            connected = await self._websocket()
            parts.append(
                Part("websocket", connected, "connected" if connected else "not connected")
            )
        ready, body = judge(parts)
        if watches:
            body["watches"] = watches[0]  # the database's, the same on every replica
        return ready, body

    async def _database(self, watches: list[int]) -> Part:
        """The database answers a COUNT of the active watches (put in `watches`) in time."""
        try:
            watches.append(
                await asyncio.wait_for(self._rt.store.count_active_subscriptions(), DB_TIMEOUT)
            )
        except DatabaseUnavailable as exc:
            return Part("database", False, exc.reason)  # safe to show; the path stays in logs
        except TimeoutError:
            return Part("database", False, f"no answer within {DB_TIMEOUT:.0f} s")
        except Exception as exc:
            return Part("database", False, type(exc).__name__)
        return Part("database", True, "answers")
