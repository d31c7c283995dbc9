"""Wiring: build the clients, the runtime, the Bolt app and the watcher of one process.

The HTTP routes live in `bot.http_routes`, the serve lifecycle (start-up and the ordered
teardown) in `bot.lifecycle`; both are re-exported here, so `bot.app` stays the one place to
build the bot from.
"""

from __future__ import annotations

import logging
import time

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot import __version__, log_context
from bot.asana import AsanaClient
from bot.config import Settings
from bot.fair_use import FairUse
from bot.http_routes import build_web_app
from bot.lifecycle import serve
from bot.metrics import MeteredWebClient, Metrics
from bot.ratelimit import RateLimitGate, TokenBucket
from bot.runtime import Runtime
from bot.store import Store
from bot.watcher import Watcher

__all__ = [
    "build_bolt_app",
    "build_runtime",
    "build_slack_client",
    "build_watcher",
    "build_web_app",
    "serve",
]


def build_slack_client(settings: Settings, metrics: Metrics | None = None) -> AsyncWebClient:
    """Slack Web API client that retries connection errors, 429 (after Retry-After) and 5xx.

    One aiohttp session for the process: without it slack_sdk opens a new session, and so a
    new TCP+TLS connection, for every call. Its cookie jar keeps nothing: the Web API sets
    no cookie a call needs, and filtering and storing them was CPU on every call. Call this
    inside the running event loop.
    Every call is counted in `metrics` (by method and error code).
    """
    assert settings.SLACK_BOT_TOKEN is not None
    return MeteredWebClient(
        metrics=metrics or Metrics(),
        session=aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()),
        token=settings.SLACK_BOT_TOKEN.get_secret_value(),
        base_url=settings.slack_api_url,
        timeout=10,
        user_agent_prefix=f"asana-export-bot/{__version__}",
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=2),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


def build_runtime(settings: Settings, store: Store, *, replica: str | None = None) -> Runtime:
    """One pooled Asana client, one Slack client and one request budget per process.

    The client and the polling budget share one 429 gate: a Retry-After seen by a lookup defers
    polls, and one seen by a poll holds lookups.
    """
    assert settings.ASANA_TOKEN is not None
    metrics = Metrics()
    gate = RateLimitGate(clock=time.monotonic)
    asana = AsanaClient(
        settings.ASANA_TOKEN.get_secret_value(),
        settings.ASANA_BASE_URL,
        timeout=settings.ASANA_TIMEOUT_SECONDS,
        max_retry_time=settings.ASANA_MAX_RETRY_SECONDS,
        gate=gate,
        observe=metrics.asana_request,
    )
    budget = TokenBucket(settings.POLL_BUDGET_PER_MINUTE, clock=time.monotonic, gate=gate)
    fair = FairUse(
        budget,
        reserved_share=settings.POLL_RESERVED_SHARE,
        user_per_minute=settings.USER_REQUESTS_PER_MINUTE,
        clock=time.monotonic,
    )
    return Runtime(
        settings=settings,
        asana=asana,
        store=store,
        slack=build_slack_client(settings, metrics),
        budget=budget,
        fair=fair,
        metrics=metrics,
        **({"replica": replica} if replica else {}),
    )


def build_watcher(runtime: Runtime) -> Watcher:
    """The watcher (and its recovery job) of this replica, timed by the runtime's settings."""
    return Watcher(runtime)


def build_bolt_app(runtime: Runtime) -> AsyncApp:
    """The AsyncApp with every listener registered; shared by both transports."""
    from handlers import actions, commands, home  # handlers depend on bot, never the reverse

    settings = runtime.settings
    app = AsyncApp(
        # Named, or Bolt names it after its caller's file with inspect.stack(), which resolves
        # every frame's module against all of sys.modules: about 30 ms of start-up.
        name="asana-export-bot",
        client=runtime.slack,
        signing_secret=(
            settings.SLACK_SIGNING_SECRET.get_secret_value()
            if settings.SLACK_SIGNING_SECRET is not None
            else ""
        ),
        request_verification_enabled=not settings.socket_mode,
        # Bolt awaits each listener; handlers.acking returns to it at the ack (no 10 ms polls).
        process_before_response=True,
        logger=logging.getLogger("slack_bolt.App"),
    )
    app.use(log_context.BindRequestFields())  # request id, team, channel, user on every line
    commands.register(app, runtime)
    home.register(app, runtime)  # before actions: its catch-all takes any unclaimed action
    actions.register(app, runtime)
    return app
