"""This process's Prometheus metrics, served at /metrics in the Prometheus text format.

One `CollectorRegistry` per `Metrics` (not prometheus-client's global default), reached through
the `Runtime`: several bots in one test process, or in-process tests, never collide. Each replica's
metrics are its own (a scrape sees one process); only `active_watches` describes the shared
database, the same number on every replica, and its help text says so.

Labels stay bounded: outcomes come from enums, Slack methods and error codes from known sets
(anything else is "other"); never a gid, a channel or a user.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.slack_out import KNOWN_ERRORS

if TYPE_CHECKING:
    from bot.ratelimit import TokenBucket

log = logging.getLogger(__name__)

PREFIX = "asana_export_bot"
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: How long a scrape waits for the database's COUNT of active watches.
SCRAPE_DB_TIMEOUT = 1.0

#: Slack Web API methods the bot calls; any other is counted as "other".
SLACK_METHODS = frozenset(
    {
        "auth.test",
        "auth.teams.list",
        "apps.connections.open",
        "chat.postMessage",
        "chat.postEphemeral",
        "chat.update",
        "chat.delete",
        "conversations.info",
        "conversations.members",
        "conversations.history",
        "views.publish",
        "users.info",
    }
)
#: Slack error codes kept as labels: the ones the bot acts on plus Slack's usual outage codes.
SLACK_ERRORS = KNOWN_ERRORS | {
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "unknown_method",
    "connection",  # Slack was not reached (no error code)
    "timeout",
}

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_ACK_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0)


def slack_method(method: str) -> str:
    """The method as a label: one of SLACK_METHODS or "other"."""
    return method if method in SLACK_METHODS else "other"


def slack_error(error: str | None) -> str:
    """An error code as a label: one of SLACK_ERRORS or "other"."""
    return error if error in SLACK_ERRORS else "other"


class Metrics:
    """Every metric of one bot process, in its own registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.asana_requests = Counter(
            f"{PREFIX}_asana_requests",
            "Asana HTTP requests sent by this replica (each retry is one), by outcome:"
            " ok, or the problem kind (rate_limited, asana_down, timeout, connection, ...)",
            ["outcome"],
            registry=r,
        )
        self.asana_seconds = Histogram(
            f"{PREFIX}_asana_request_seconds",
            "Latency of one Asana HTTP request of this replica (answered or failed)",
            buckets=_SECONDS,
            registry=r,
        )
        self.polls = Counter(
            f"{PREFIX}_polls",
            "Polls of an export by this replica, by what followed: continue, finished, failed,"
            " gone, paused, retry; error for a poll that raised",
            ["outcome"],
            registry=r,
        )
        self.ticks = Counter(
            f"{PREFIX}_ticks",
            "Watcher ticks run by this replica, by result: ok, database_unavailable, error",
            ["result"],
            registry=r,
        )
        self.tick_seconds = Histogram(
            f"{PREFIX}_tick_seconds",
            "Duration of one watcher tick of this replica (claiming and polling what is due)",
            buckets=_SECONDS,
            registry=r,
        )
        self.budget_tokens = Gauge(
            f"{PREFIX}_budget_tokens",
            "Asana requests this replica's polling budget would allow right now"
            " (0 while a 429's Retry-After holds the token)",
            registry=r,
        )
        self.deferred = Counter(
            f"{PREFIX}_requests_deferred",
            "Asana requests this replica deferred: poll (the budget put a claimed poll off),"
            " busy (a person was told people's share is used up), user (a person over"
            " USER_REQUESTS_PER_MINUTE)",
            ["kind"],
            registry=r,
        )
        self.notifications = Counter(
            f"{PREFIX}_notifications",
            "Finished/failed/gone notifications this replica tried to post, by outcome: posted,"
            " paused (token pause), timeout, or Slack's failure class (channel, token, content,"
            " transient)",
            ["outcome"],
            registry=r,
        )
        self.active_watches = Gauge(
            f"{PREFIX}_active_watches",
            "Active watches in the shared database, counted at scrape time: it describes the"
            " database, so every replica reports the same number (do not sum across replicas)",
            registry=r,
        )
        self.scrape_errors = Counter(
            f"{PREFIX}_scrape_errors",
            "Scrapes of this replica that could not count the active watches"
            " (the gauge keeps its last value)",
            registry=r,
        )
        self.slack_calls = Counter(
            f"{PREFIX}_slack_api_calls",
            "Slack Web API calls made by this replica, by method and error code"
            " (ok on success; connection/timeout when Slack was not reached; other for codes"
            " not listed in the README)",
            ["method", "error"],
            registry=r,
        )
        self.ack_seconds = Histogram(
            f"{PREFIX}_command_ack_seconds",
            "Time from this replica's slash command listener receiving a command to its ack"
            " (Slack allows 3 s)",
            buckets=_ACK_SECONDS,
            registry=r,
        )

    # -- observations, called where each thing happens --------------------------------------

    def asana_request(self, outcome: str, seconds: float) -> None:
        """One Asana HTTP exchange ended (`AsanaClient(observe=...)`)."""
        self.asana_requests.labels(outcome).inc()
        self.asana_seconds.observe(seconds)

    def slack_call(self, method: str, error: str | None) -> None:
        """One Slack Web API call ended: error None when it succeeded."""
        self.slack_calls.labels(
            slack_method(method), "ok" if error is None else slack_error(error)
        ).inc()

    def track_budget(self, budget: TokenBucket) -> None:
        """Read the polling budget at every scrape."""
        self.budget_tokens.set_function(budget.available)

    # -- the scrape --------------------------------------------------------------------------

    async def scrape(self, count_active_watches: Callable[[], Awaitable[int]]) -> bytes:
        """The text exposition, after counting the active watches (bounded by a short timeout).

        A database that does not answer leaves the gauge at its last value and counts a scrape
        error: the other metrics must still be served.
        """
        try:
            self.active_watches.set(
                await asyncio.wait_for(count_active_watches(), SCRAPE_DB_TIMEOUT)
            )
        except Exception as exc:
            self.scrape_errors.inc()
            log.info("metrics: could not count active watches (%s)", type(exc).__name__)
        return generate_latest(self.registry)


class MeteredWebClient(AsyncWebClient):
    """slack_sdk's client that counts every Web API call by method and error code.

    `api_call` is the one path of every method (ours, Bolt's auth.test, Socket Mode's
    apps.connections.open); the SDK's retries happen inside it, so a call is counted once.
    """

    def __init__(self, *args: Any, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = metrics

    async def api_call(self, api_method: str, **kwargs: Any) -> AsyncSlackResponse:  # type: ignore[override]
        try:
            response = await super().api_call(api_method, **kwargs)
        except SlackApiError as exc:
            self.metrics.slack_call(api_method, str(exc.response.get("error") or "other"))
            raise
        except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
            self.metrics.slack_call(
                api_method, "timeout" if isinstance(exc, TimeoutError) else "connection"
            )
            raise
        self.metrics.slack_call(api_method, None)
        return response


class TimedAck:
    """Bolt's `ack`, observing the time from the listener starting to the first ack."""

    def __init__(self, ack: Any, observe: Callable[[float], None]) -> None:
        self._ack = ack
        self._observe = observe
        self._started = time.monotonic()
        self._done = False

    @property
    def response(self) -> Any:
        return self._ack.response

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = await self._ack(*args, **kwargs)
        if not self._done:
            self._done = True
            self._observe(time.monotonic() - self._started)
        return result
