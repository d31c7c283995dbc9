"""Serving: start everything in order, run until SIGINT/SIGTERM, stop everything in order.

Start-up binds PORT first (a taken port stops start-up before anything else runs), then opens
the database, builds the runtime, checks the Slack token, starts the scheduler, serves HTTP
(/healthz, /readyz, /metrics, and Slack's endpoint in HTTP mode), and in Socket Mode connects;
/readyz says whether each of those parts is fine now. Teardown is `_teardown`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import socket
from typing import TYPE_CHECKING, Any

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import background, log_context
from bot.config import Settings
from bot.db import open_database
from bot.followups import FOLLOWUP_SECONDS, Followups
from bot.http_limits import HttpLimits, LimitedSite, bind_listener, files_warning
from bot.http_routes import EVENTS_PATH, build_web_app
from bot.readiness import Readiness, SlackCheck
from bot.runtime import Runtime, replica_id
from bot.schedule_firing import ScheduleFirer
from bot.scheduler import (
    RunningJobs,
    add_archive_job,
    add_followup_job,
    add_schedule_job,
    build_scheduler,
    stop_scheduler,
)
from bot.store import Store
from bot.watcher import Watcher

if TYPE_CHECKING:
    from bot.archive.job import Archiver
    from bot.socket_mode import StoppableSocketModeHandler

log = logging.getLogger(__name__)


async def _check_slack_auth(bolt: AsyncApp, check: SlackCheck) -> dict[str, Any] | None:
    """Fail fast on a bad bot token; a Slack outage at start-up only warns (and the replica
    is not ready until the periodic check passes).

    Returns auth.test's answer (who installed us), or None when Slack did not give one.
    """
    try:
        auth = await bolt.client.auth_test()
        log.info("connected to Slack team %s as %s", auth.get("team_id"), auth.get("user_id"))
        data = dict(auth.data) if isinstance(auth.data, dict) else {}
        check.record(data)
        return data or None
    except SlackApiError as exc:
        error = exc.response.get("error")
        if error in ("invalid_auth", "not_authed", "token_revoked", "account_inactive"):
            raise SystemExit(
                f"Slack rejected SLACK_BOT_TOKEN ({error}): reinstall the app and set a new token."
            ) from None
        log.warning("auth.test failed (%s); continuing", error)
        check.record(None, str(error))
    except Exception as exc:  # network trouble must not stop the bot
        log.warning("could not reach Slack at start-up (%s); continuing", type(exc).__name__)
        check.record(None, "Slack unreachable")
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
    # bot.app imports this module to re-export `serve`: its builders are imported when used.
    from bot.app import build_bolt_app, build_runtime, build_watcher

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
    # A start-up that stops half-way (a rejected token) closes what it opened, in the
    # teardown's order; once it is serving, the teardown closes them.
    async with contextlib.AsyncExitStack() as opened:
        opened.push_async_callback(engine.dispose)
        store = Store(engine)
        opened.callback(store.close)
        runtime = build_runtime(settings, store, replica=replica)
        opened.push_async_callback(_close_clients, runtime)
        bolt = build_bolt_app(runtime)
        slack_check = SlackCheck(runtime)
        runtime.installation.remember(await _check_slack_auth(bolt, slack_check))
        watcher = build_watcher(runtime)
        scheduler = build_scheduler(
            watcher, tick_seconds=settings.TICK_SECONDS, recover_seconds=settings.RECOVER_SECONDS
        )
        running = RunningJobs(scheduler)
        add_schedule_job(scheduler, ScheduleFirer(runtime).tick)
        add_followup_job(scheduler, Followups(runtime).run, seconds=FOLLOWUP_SECONDS)
        archiver = _archiver(runtime, scheduler)
        # Readiness re-asks Slack: /readyz turns 503 when the token stops working and back after.
        scheduler.add_job(
            slack_check.run, IntervalTrigger(seconds=settings.SLACK_CHECK_SECONDS), id="slack_check"
        )
        transport = _Transport()

        def status() -> dict[str, Any]:
            slack = runtime.notify.status()
            return {
                "replica": runtime.replica,
                "slack_paused": slack.reason if slack.paused else None,
            }

        readiness = Readiness(
            runtime,
            scheduler=scheduler,
            watcher=watcher,
            slack=slack_check,
            websocket=transport.is_connected if settings.socket_mode else None,
        )
        web_app = build_web_app(
            None if settings.socket_mode else bolt,
            settings,
            status,
            ready=readiness.check,
            scrape=lambda: runtime.metrics.scrape(runtime.store.count_active_subscriptions),
        )
        runner = web.AppRunner(web_app, access_log=None, handle_signals=False)
        await runner.setup()
        site = LimitedSite(runner, sock, limits)
        opened.pop_all()
    try:
        scheduler.start()
        # Served before Socket Mode connects: /readyz names the websocket until it is up.
        await site.start()
        if settings.socket_mode:
            await transport.connect(bolt, settings, stop)
            if transport.connected:
                log.info("serving Socket Mode")  # every line names the replica
        else:
            log.info("serving HTTP on %s:%s%s", settings.HOST, settings.PORT, EVENTS_PATH)
        await stop.wait()
        log.info("shutting down")
    finally:
        if archiver is not None:  # aborts its upload, not cancelled
            await archiver.stop(grace=settings.LEASE_SECONDS / 2)
        await _teardown(
            settings,
            (scheduler, running),
            watcher,
            transport,
            runner,
            runtime=runtime,
            engine=engine,
        )


def _archiver(runtime: Runtime, scheduler: AsyncIOScheduler) -> Archiver | None:
    """The archive job, scheduled, where ARCHIVE_URL is set. Elsewhere it is not even imported
    (streaming, storage and obstore: 15 ms of start-up); watching queues archives through
    `bot.archive.queue`, which needs none of it."""
    if not runtime.settings.ARCHIVE_URL:
        return None
    from bot.archive.job import ARCHIVE_TICK_SECONDS, Archiver

    archiver = Archiver(runtime)
    add_archive_job(scheduler, archiver.tick, seconds=ARCHIVE_TICK_SECONDS)
    return archiver


class _Transport:
    """The Socket Mode connection, when there is one (HTTP mode is the aiohttp runner)."""

    def __init__(self) -> None:
        self.handler: StoppableSocketModeHandler | None = None
        self.connector: asyncio.Task[None] | None = None
        self.connected = False

    async def connect(self, bolt: AsyncApp, settings: Settings, stop: asyncio.Event) -> None:
        """Connect and keep reconnecting; returns at the first connection or at `stop`."""
        from bot.socket_mode import StoppableSocketModeHandler, keep_connected

        assert settings.SLACK_APP_TOKEN is not None
        self.handler = StoppableSocketModeHandler(
            bolt, settings.SLACK_APP_TOKEN.get_secret_value(), logger=bolt.logger
        )
        connected = asyncio.Event()
        self.connector = asyncio.create_task(keep_connected(self.handler.client, stop, connected))
        # Until the first connection the bot is not ready, but SIGTERM still stops it.
        waiter = asyncio.ensure_future(connected.wait())
        await asyncio.wait([waiter, self.connector], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        self.connected = connected.is_set()

    async def is_connected(self) -> bool:
        """For /readyz: the websocket is open now (not merely was once)."""
        return self.handler is not None and await self.handler.client.is_connected()

    async def close(self) -> None:
        if self.connector is not None:
            self.connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.connector
        if self.handler is not None:
            await self.handler.close_async()


async def _teardown(
    settings: Settings,
    jobs: tuple[AsyncIOScheduler, RunningJobs],
    watcher: Watcher,
    transport: _Transport,
    runner: web.AppRunner,
    *,
    runtime: Runtime,
    engine: AsyncEngine,
) -> None:
    """Stop in the reverse order of what depends on what; each step needs the ones after it.

    1. The scheduler: no new job starts, the running ones finish (up to half a lease), and
       this replica's leases are given back, so another replica polls them at once. It needs
       the database and both clients, which are still open.
    2. The transport: Socket Mode stops receiving (the reconnect loop first, so it does not
       reconnect what is being closed), then the HTTP server stops taking requests and waits
       for the listeners still answering; they too need the clients and the database.
    3. The clients: Asana's pooled connections, then Slack's aiohttp session.
    4. The database, last: everything above may write to it until it is done (the store's
       SQLite threads, then the engine).
    """
    scheduler, running = jobs
    await stop_scheduler(scheduler, running, watcher, grace=settings.LEASE_SECONDS / 2)
    await transport.close()
    await runner.cleanup()
    # What listeners left running after their ack (respond(), cards, audit lines) still
    # needs the Slack client and the database.
    await background.drain(grace=5.0)
    await _close_clients(runtime)
    runtime.store.close()
    await engine.dispose()


async def _close_clients(runtime: Runtime) -> None:
    """Asana's pooled connections, then Slack's aiohttp session."""
    await runtime.asana.aclose()
    if runtime.slack.session is not None:
        await runtime.slack.session.close()
