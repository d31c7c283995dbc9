"""Limits on the HTTP server: a read deadline, a cap on open connections, quiet disconnects.

aiohttp 3.x times out a connection only while it waits for request headers (`keepalive_timeout`,
an hour by default); once headers have arrived nothing times out the body, so a client that
sends headers and then stalls or trickles its body holds a connection, a task and a file
descriptor for as long as it likes, and a few hundred of them exhaust the process's files. And
a client that goes away while its body is being read makes the handler raise
ConnectionResetError, which aiohttp logs with a traceback.

Here every connection must deliver a whole request (headers and body) within `read_timeout` of
opening or of the previous response, or it is closed; at most `max_connections` are open at once,
and a new one beyond the cap closes the connection that has been waiting longest for its request
(a slow client loses its place, Slack's quick requests still get in). Only when every open
connection is busy with a complete request is the newcomer answered 503 and closed.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

#: Files the bot needs besides its HTTP connections: database, Slack and Asana pools, logs.
FILES_RESERVED = 128
#: Listen backlog; asyncio also accepts up to this many connections in one go before any of
#: them meets the cap, and as many evicted ones may still await their close.
BACKLOG = 128
#: At most one warning per this many seconds about the cap being reached.
_WARN_EVERY = 60.0
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 5\r\nRetry-After: 1\r\nConnection: close\r\n"
    b"\r\nbusy\n"
)


@dataclass(frozen=True)
class HttpLimits:
    """HTTP_READ_TIMEOUT_SECONDS and HTTP_MAX_CONNECTIONS."""

    read_timeout: float
    max_connections: int


class ListenError(Exception):
    """The HTTP port cannot be bound; the message is one line saying which setting to change."""


def bind_listener(host: str, port: int) -> socket.socket:
    """Bind HOST:PORT now (listening starts later), so a taken port stops start-up at once."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror:
        raise ListenError(
            f"HOST {host!r} is not an address of this machine: set HOST to 0.0.0.0 or 127.0.0.1."
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ListenError(_bind_problem(exc, host, port)) from None
    return sock


def _bind_problem(exc: OSError, host: str, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"PORT {port} on HOST {host} is already in use by another process: "
            "stop that process or set PORT to a free port."
        )
    if exc.errno == errno.EACCES:
        return (
            f"not allowed to listen on PORT {port} on HOST {host} "
            "(ports below 1024 need privileges): set PORT to 1024 or above."
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"HOST {host} is not an address of this machine: set HOST to 0.0.0.0 or 127.0.0.1."
    return f"cannot listen on HOST {host} PORT {port} ({exc.strerror}): check HOST and PORT."


def files_needed(max_connections: int) -> int:
    """Open files the process may need at worst: the cap, a burst in flight, and its own."""
    return max_connections + 2 * BACKLOG + FILES_RESERVED


def files_warning(max_connections: int, soft_limit: int) -> str | None:
    """A warning when HTTP_MAX_CONNECTIONS leaves too few files for everything else."""
    needed = files_needed(max_connections)
    if soft_limit == resource.RLIM_INFINITY or needed <= soft_limit:
        return None
    return (
        f"HTTP_MAX_CONNECTIONS={max_connections} may need {needed} open files but this process "
        f"may have {soft_limit} (ulimit -n): lower HTTP_MAX_CONNECTIONS or raise the limit."
    )


class ConnectionGuard:
    """Read deadlines and the connection cap for every connection of one listening socket."""

    def __init__(self, limits: HttpLimits, loop: asyncio.AbstractEventLoop) -> None:
        self.limits = limits
        self._loop = loop
        self._open: set[LimitedHandler] = set()
        #: Connections still receiving a request, oldest deadline first, with their timers.
        self._waiting: OrderedDict[LimitedHandler, asyncio.TimerHandle] = OrderedDict()
        self._warned_at = -_WARN_EVERY

    def admit(self, conn: LimitedHandler) -> bool:
        """A new connection: make room under the cap if needed; False when it must be refused."""
        if len(self._open) >= self.limits.max_connections:
            victim = self._oldest_unfinished()
            self._warn_cap()
            if victim is None:
                return False
            victim.cut("connection cap reached")
        self._open.add(conn)
        self.restart(conn)
        return True

    def restart(self, conn: LimitedHandler) -> None:
        """The next request on `conn` must arrive in full within the read timeout from now."""
        self.forget(conn)
        if conn in self._open:
            self._waiting[conn] = self._loop.call_later(
                self.limits.read_timeout, self._expire, conn
            )

    def forget(self, conn: LimitedHandler) -> None:
        timer = self._waiting.pop(conn, None)
        if timer is not None:
            timer.cancel()

    def closed(self, conn: LimitedHandler) -> None:
        self.forget(conn)
        self._open.discard(conn)

    def _expire(self, conn: LimitedHandler) -> None:
        self._waiting.pop(conn, None)
        if not conn.request_complete():
            conn.cut(f"no complete request within {self.limits.read_timeout:g}s")

    def _oldest_unfinished(self) -> LimitedHandler | None:
        while self._waiting:
            conn, timer = next(iter(self._waiting.items()))
            if not conn.request_complete():
                return conn
            timer.cancel()  # busy with a whole request: restarted when its response is out
            del self._waiting[conn]
        return None

    def _warn_cap(self) -> None:
        now = self._loop.time()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning(
                "%d HTTP connections open (HTTP_MAX_CONNECTIONS): closing the ones that "
                "have waited longest for a whole request",
                self.limits.max_connections,
            )


class LimitedHandler(web.RequestHandler):
    """aiohttp's connection handler, registered with a ConnectionGuard."""

    def __init__(self, manager: web.Server, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.request: web.BaseRequest | None = None
        self.cut_reason: str | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.guard.admit(self):
            self._refused = True
            assert isinstance(transport, asyncio.Transport)
            transport.write(_BUSY)
            transport.close()
            return
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self.guard.closed(self)
        super().connection_lost(exc)

    def request_complete(self) -> bool:
        """A handler is running and the whole body has arrived (an idle connection is not)."""
        return self.request is not None and self.request.content.is_eof()

    def cut(self, reason: str) -> None:
        """Close now; the handler (if any) sees the client gone and stays quiet about it."""
        self.cut_reason = reason
        log.debug("closed an HTTP connection from %s: %s", _peer(self), reason)
        self.guard.closed(self)
        if self.transport is not None:
            self.transport.abort()


def _peer(conn: LimitedHandler) -> str:
    peer = conn.transport.get_extra_info("peername") if conn.transport is not None else None
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def quiet_disconnects(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Mark the request on its guarded connection, and log a vanished client in one line.

    aiohttp would log ConnectionResetError from reading the body of a client that went away
    as "Error handling request" with a traceback; the answer would go nowhere anyway.
    """
    conn = request.protocol if isinstance(request.protocol, LimitedHandler) else None
    if conn is not None:
        conn.request = request
    try:
        return await handler(request)
    except (ConnectionError, RuntimeError):
        # ConnectionResetError when the client goes while the body is read; RuntimeError
        # ("Connection closed.") when it went before the handler started reading.
        if request.transport is not None and not request.transport.is_closing():
            raise  # the connection is fine: a real error
        if conn is None or conn.cut_reason is None:
            log.debug("client went away before its request was read (%s)", request.path)
        return web.Response(status=400)  # written nowhere: the connection is gone
    finally:
        if conn is not None:
            conn.request = None
            conn.guard.restart(conn)


class LimitedSite(web.BaseSite):
    """Serves a runner on an already bound socket with LimitedHandler connections."""

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        limits: HttpLimits,
        backlog: int = BACKLOG,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._sock = sock
        self._limits = limits

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        guard = ConnectionGuard(self._limits, loop)
        timeout = self._limits.read_timeout

        def handler() -> LimitedHandler:
            # An idle keep-alive connection gets the same time as a request in progress.
            return LimitedHandler(
                server, guard, loop=loop, keepalive_timeout=timeout, access_log=None
            )

        self._server = await loop.create_server(handler, sock=self._sock, backlog=self._backlog)
