"""Build the Bolt AsyncApp, the HTTP server or Socket Mode handler, and run them in one loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot import __version__, log_context
from bot.asana import AsanaClient
from bot.config import Settings
from bot.db import DatabaseUnavailable, open_database
from bot.fair_use import FairUse
from bot.http_limits import HttpLimits, LimitedSite, bind_listener, files_warning, quiet_disconnects
from bot.ratelimit import RateLimitGate, TokenBucket
from bot.runtime import Runtime
from bot.scheduler import build_scheduler, stop_scheduler
from bot.slack_out import LinkGate
from bot.store import Store
from bot.watcher import Watcher, WatcherConfig

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"

_FORM = "application/x-www-form-urlencoded"
_JSON = "application/json"
#: Envelope types of the Events API: the only JSON that Slack POSTs to an app.
_EVENTS_API_TYPES = frozenset({"url_verification", "event_callback", "app_rate_limited"})
_SIGNATURE_HEADERS = ("X-Slack-Signature", "X-Slack-Request-Timestamp")


def build_slack_client(settings: Settings) -> AsyncWebClient:
    """Slack Web API client that retries connection errors, 429 (after Retry-After) and 5xx.

    One aiohttp session for the process: without it slack_sdk opens a new session, and so a
    new TCP+TLS connection, for every call. Call this inside the running event loop.
    """
    assert settings.SLACK_BOT_TOKEN is not None
    return AsyncWebClient(
        session=aiohttp.ClientSession(),
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


def replica_id() -> str:
    """Who holds a lease: host and pid plus a random part, unique across restarts."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def build_runtime(settings: Settings, store: Store) -> Runtime:
    """One pooled Asana client, one Slack client and one request budget per process.

    The client and the polling budget share one 429 gate: a Retry-After seen by a lookup defers
    polls, and one seen by a poll holds lookups.
    """
    assert settings.ASANA_TOKEN is not None
    gate = RateLimitGate(clock=time.monotonic)
    asana = AsanaClient(
        settings.ASANA_TOKEN.get_secret_value(),
        settings.ASANA_BASE_URL,
        timeout=settings.ASANA_TIMEOUT_SECONDS,
        max_retry_time=settings.ASANA_MAX_RETRY_SECONDS,
        gate=gate,
    )
    budget = TokenBucket(settings.POLL_BUDGET_PER_MINUTE, clock=time.monotonic, gate=gate)
    fair = FairUse(
        budget,
        reserved_share=settings.POLL_RESERVED_SHARE,
        user_per_minute=settings.USER_REQUESTS_PER_MINUTE,
        clock=time.monotonic,
    )
    slack = build_slack_client(settings)
    return Runtime(
        settings=settings,
        asana=asana,
        store=store,
        slack=slack,
        links=LinkGate(slack, settings.LINK_POLICY),
        budget=budget,
        fair=fair,
    )


def build_watcher(runtime: Runtime, owner: str | None = None) -> Watcher:
    s = runtime.settings
    config = WatcherConfig(
        policy=runtime.poll_policy,
        lease=timedelta(seconds=s.LEASE_SECONDS),
        batch=s.POLL_BATCH,
        concurrency=s.POLL_CONCURRENCY,
        notify_grace=timedelta(seconds=s.NOTIFY_GRACE_SECONDS),
    )
    return Watcher(
        store=runtime.store,
        asana=runtime.asana,
        slack=runtime.slack,
        links=runtime.links,
        budget=runtime.budget,
        owner=owner or replica_id(),
        config=config,
        now=runtime.now,
        command=s.SLACK_COMMAND,
    )


def build_bolt_app(runtime: Runtime) -> AsyncApp:
    """The AsyncApp with every listener registered; shared by both transports."""
    from handlers import actions, commands  # handlers depend on bot, never the reverse

    settings = runtime.settings
    app = AsyncApp(
        client=runtime.slack,
        signing_secret=(
            settings.SLACK_SIGNING_SECRET.get_secret_value()
            if settings.SLACK_SIGNING_SECRET is not None
            else ""
        ),
        request_verification_enabled=not settings.socket_mode,
        process_before_response=False,
        logger=logging.getLogger("slack_bolt.App"),
    )
    app.use(log_context.bolt_middleware)  # request id, team, channel, user on every line
    commands.register(app, runtime)
    actions.register(app, runtime)
    return app


def _refusal(request: web.Request, body: str) -> web.Response | None:
    """Refuse what Slack never sends before Bolt sees it, or None to let Bolt decide.

    Slack posts slash commands and clicks as forms and Events API callbacks as JSON, with one
    signature and one integer timestamp. Bolt would run a signed JSON slash command, trust the
    first of two signatures, and log a traceback for a timestamp that is not a number.
    """
    for name in _SIGNATURE_HEADERS:
        if len(request.headers.getall(name, [])) > 1:
            return web.json_response({"error": f"duplicate {name}"}, status=401)
    timestamp = request.headers.get("X-Slack-Request-Timestamp")
    if timestamp is not None and not (
        timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12
    ):
        return web.json_response({"error": "invalid timestamp"}, status=401)
    if request.content_type == _FORM:
        if body.startswith("{"):
            return web.json_response({"error": "form body expected"}, status=400)
        return None
    if request.content_type == _JSON:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than Python goes
            return web.json_response({"error": "invalid JSON"}, status=400)
        if not isinstance(data, dict) or data.get("type") not in _EVENTS_API_TYPES:
            return web.json_response({"error": "not an Events API callback"}, status=400)
        return None
    return web.json_response({"error": "unsupported content type"}, status=415)


Status = Callable[[], Awaitable[dict[str, Any]]]


def build_web_app(
    bolt: AsyncApp | None, settings: Settings, status: Status | None = None
) -> web.Application:
    """aiohttp app with the Slack endpoint (HTTP mode) and a health check (both modes).

    The health check asks `status` (the database among others): a replica that cannot reach its
    database answers 503, so a load balancer stops sending it Slack's requests.
    """
    web_app = web.Application(
        client_max_size=settings.MAX_BODY_BYTES, middlewares=[quiet_disconnects]
    )

    async def health(_: web.Request) -> web.Response:
        body: dict[str, Any] = {"ok": True, "version": __version__}
        if status is not None:
            try:
                body.update(await asyncio.wait_for(status(), 2.0))
            except DatabaseUnavailable as exc:  # its file was deleted: say so, without the path
                log.warning("health check failed: %s", exc)
                return web.json_response(
                    {**body, "ok": False, "error": type(exc).__name__, "database": exc.reason},
                    status=503,
                )
            except Exception as exc:
                log.warning("health check failed: %s", type(exc).__name__)
                return web.json_response(
                    {**body, "ok": False, "error": type(exc).__name__}, status=503
                )
        return web.json_response(body)

    async def slack_events(request: web.Request) -> web.Response:
        assert bolt is not None
        try:
            body = await request.text()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "body too large"}, status=413)
        except (UnicodeDecodeError, ValueError):
            return web.json_response({"error": "body is not text"}, status=400)
        refusal = _refusal(request, body)
        if refusal is not None:
            log.info("refused a request Slack would not send: %s", refusal.text)
            return refusal
        try:
            bolt_request = AsyncBoltRequest(
                body=body,
                query=request.query_string,
                headers=dict(request.headers),  # type: ignore[arg-type]
            )
        except Exception:  # any unparsable body is the sender's problem
            log.info("rejected an unparsable request body")
            return web.json_response({"error": "unparsable body"}, status=400)
        bolt_response = await bolt.async_dispatch(bolt_request)
        if bolt_response.status >= 500:
            # Bolt answers 500 for a listener that never acked; never tell Slack we broke.
            log.warning("bolt answered %s; replying 400 instead", bolt_response.status)
            return web.json_response({"error": "not handled"}, status=400)
        return await to_aiohttp_response(bolt_response)

    web_app.router.add_get(HEALTH_PATH, health)
    if bolt is not None:
        web_app.router.add_post(EVENTS_PATH, slack_events)
    return web_app


async def _check_slack_auth(bolt: AsyncApp) -> dict[str, Any] | None:
    """Fail fast on a bad bot token; a Slack outage at start-up only warns.

    Returns auth.test's answer (who installed us), or None when Slack did not give one.
    """
    try:
        auth = await bolt.client.auth_test()
        log.info("connected to Slack team %s as %s", auth.get("team_id"), auth.get("user_id"))
        return dict(auth.data) if isinstance(auth.data, dict) else None
    except SlackApiError as exc:
        error = exc.response.get("error")
        if error in ("invalid_auth", "not_authed", "token_revoked", "account_inactive"):
            raise SystemExit(
                f"Slack rejected SLACK_BOT_TOKEN ({error}): reinstall the app and set a new token."
            ) from None
        log.warning("auth.test failed (%s); continuing", error)
    except Exception as exc:  # network trouble must not stop the bot
        log.warning("could not reach Slack at start-up (%s); continuing", type(exc).__name__)
    return None


async def serve(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM: HTTP endpoint or Socket Mode, the watcher, the health check.

    PORT is bound before anything else starts, so a taken port stops start-up with ListenError.
    """
    sock = bind_listener(settings.HOST, settings.PORT)
    try:
        await _serve(settings, sock)
    finally:
        sock.close()


async def _serve(settings: Settings, sock: socket.socket) -> None:
    replica = replica_id()
    log_context.set_replica(replica)  # on every line from here on
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)

    limits = HttpLimits(settings.HTTP_READ_TIMEOUT_SECONDS, settings.HTTP_MAX_CONNECTIONS)
    warning = files_warning(limits.max_connections, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    if warning:
        log.warning("%s", warning)
    engine = await open_database(settings.DATABASE_URL)
    runtime = build_runtime(settings, Store(engine))
    bolt = build_bolt_app(runtime)
    runtime.installation.remember(await _check_slack_auth(bolt))
    watcher = build_watcher(runtime, replica)
    scheduler = build_scheduler(
        watcher, tick_seconds=settings.TICK_SECONDS, recover_seconds=settings.RECOVER_SECONDS
    )

    socket_handler = None
    connector: asyncio.Task[None] | None = None

    async def status() -> dict[str, Any]:
        return {
            "replica": watcher.owner,
            "watches": await runtime.store.count_active_subscriptions(),
            "due": await runtime.store.due_count(runtime.now()),
            "slack_paused": watcher.slack_pause_reason if watcher.slack_paused() else None,
        }

    web_app = build_web_app(None if settings.socket_mode else bolt, settings, status)
    runner = web.AppRunner(web_app, access_log=None, handle_signals=False)
    await runner.setup()
    site = LimitedSite(runner, sock, limits)
    try:
        scheduler.start()
        if settings.socket_mode:
            from bot.socket_mode import StoppableSocketModeHandler, keep_connected

            assert settings.SLACK_APP_TOKEN is not None
            socket_handler = StoppableSocketModeHandler(
                bolt, settings.SLACK_APP_TOKEN.get_secret_value(), logger=bolt.logger
            )
            connected = asyncio.Event()
            connector = asyncio.create_task(keep_connected(socket_handler.client, stop, connected))
            # Until the first connection the bot is not healthy, but SIGTERM still stops it.
            waiter = asyncio.ensure_future(connected.wait())
            await asyncio.wait([waiter, connector], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if connected.is_set():
                log.info("serving Socket Mode as replica %s", watcher.owner)
        else:
            log.info(
                "serving HTTP on %s:%s%s as replica %s",
                settings.HOST,
                settings.PORT,
                EVENTS_PATH,
                watcher.owner,
            )
        await site.start()  # healthy only once everything behind it is up
        await stop.wait()
        log.info("shutting down")
    finally:
        await stop_scheduler(scheduler, watcher, grace=settings.LEASE_SECONDS / 2)
        if connector is not None:
            connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connector
        if socket_handler is not None:
            await socket_handler.close_async()
        await runner.cleanup()
        await runtime.asana.aclose()
        if runtime.slack.session is not None:
            await runtime.slack.session.close()
        await engine.dispose()
