"""Socket Mode that can be stopped: one connection attempt at a time, our backoff in between.

slack_sdk's aiohttp client retries a failed connect forever inside `connect()` (a full traceback
every few seconds) and only stops when closed, so a bot started while Slack is unreachable never
reached its signal handling and ignored SIGTERM. Here `connect()` makes one attempt and raises;
`keep_connected` is the only place that (re)connects, with capped backoff, one log line per
failure, and it returns as soon as the stop event is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

import aiohttp
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient

from bot.backoff import transient_retry_delay

log = logging.getLogger(__name__)

#: Reconnect backoff: 1 s, 2 s, 4 s ... up to 30 s (jittered), reset once connected.
RECONNECT_INITIAL = 1.0
RECONNECT_CAP = 30.0
#: How often the supervisor looks at the connection (the library pings every PING_INTERVAL).
CHECK_INTERVAL = 1.0
PING_INTERVAL = 10.0


def describe(exc: BaseException) -> str:
    """One short line for a failed attempt: the Slack error code, or the exception's type."""
    if isinstance(exc, SlackApiError):
        return f"Slack answered {exc.response.get('error') or exc.response.status_code}"
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class OneAttemptSocketModeClient(SocketModeClient):
    """slack_sdk's aiohttp Socket Mode client whose `connect()` tries once and raises."""

    async def connect(self) -> None:
        """A fresh WSS URL, a websocket, then the library's monitor and receiver tasks."""
        old = self.current_session
        self.auto_reconnect_enabled = False
        if old is not None and not old.closed:
            with contextlib.suppress(Exception):
                await old.close()
        if self.aiohttp_client_session.closed:
            self.aiohttp_client_session = aiohttp.ClientSession()
        response = await self.web_client.apps_connections_open(app_token=self.app_token)
        self.wss_uri = response["url"]
        self.current_session = await self.aiohttp_client_session.ws_connect(
            self.wss_uri,
            autoping=False,
            heartbeat=self.ping_interval,
            proxy=self.proxy,
            ssl=self.web_client.ssl if self.web_client.ssl is not None else True,
        )
        self.stale = False
        self.last_ping_pong_time = None
        await self.current_session.ping(f"sdk-ping-pong:{time.time()}".encode())
        if self.current_session_monitor is not None:
            self.current_session_monitor.cancel()
        self.current_session_monitor = asyncio.ensure_future(self.monitor_current_session())
        if self.message_receiver is not None:
            self.message_receiver.cancel()
        self.message_receiver = asyncio.ensure_future(self.receive_messages())

    async def connect_to_new_endpoint(self, force: bool = False) -> None:
        """Slack's `disconnect` message lands here: one attempt; keep_connected retries."""
        try:
            await super().connect_to_new_endpoint(force=force)
        except Exception as exc:
            log.warning("Socket Mode reconnect failed (%s); retrying with backoff", describe(exc))


class StoppableSocketModeHandler(AsyncSocketModeHandler):
    """Bolt's Socket Mode handler on the one-attempt client, library auto-reconnect off."""

    def __init__(self, app: AsyncApp, app_token: str, *, logger: logging.Logger) -> None:
        self.app = app
        self.app_token = app_token
        self.client = OneAttemptSocketModeClient(
            app_token=app_token,
            logger=logger,
            web_client=app.client,
            auto_reconnect_enabled=False,
            ping_interval=PING_INTERVAL,
        )
        self.client.socket_mode_request_listeners.append(self.handle)  # type: ignore[arg-type]


async def _until(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _attempt(client: OneAttemptSocketModeClient, stop: asyncio.Event) -> bool:
    """One connect, abandoned (cancelled) if stop is set first; True when connected."""
    attempt = asyncio.ensure_future(client.connect())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({attempt, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not attempt.done():
        attempt.cancel()
        with contextlib.suppress(BaseException):
            await attempt
        return False
    attempt.result()  # raises what failed
    return True


async def keep_connected(
    client: OneAttemptSocketModeClient,
    stop: asyncio.Event,
    connected: asyncio.Event,
    *,
    rng: random.Random | None = None,
) -> None:
    """Connect, and reconnect whenever the session is gone, until `stop` is set.

    Sets `connected` after the first success. Each failure is one WARNING line naming the
    attempt and the wait before the next one; no traceback (the cause is in the line).
    """
    rng = rng or random.Random()
    failures = 0
    while not stop.is_set():
        if await client.is_connected():
            await _until(stop, CHECK_INTERVAL)
            continue
        try:
            if not await _attempt(client, stop):
                return
        except Exception as exc:
            failures += 1
            wait = transient_retry_delay(
                failures,
                retry_after=None,
                initial=RECONNECT_INITIAL,
                cap=RECONNECT_CAP,
                jitter=0.1,
                rng=rng,
            )
            log.warning(
                "Socket Mode: could not connect to Slack (%s); attempt %d failed, next in %.1f s",
                describe(exc),
                failures,
                wait,
            )
            await _until(stop, wait)
            continue
        if failures:
            log.info("Socket Mode connected after %d failed attempt(s)", failures)
        failures = 0
        connected.set()
