"""A small HTTP/1.1 keep-alive transport under httpx, for the Asana client's hot path.

httpx stays the client's interface (requests, responses, timeouts, errors); only the layer under
it changes. httpcore's pool, anyio's locks and h11's state machine cost about half of the client's
CPU per `get_export` (bench/asana_client.py, notes in docs/benchmarks.md); this does the same
exchange on asyncio streams: one request at a time per connection, connections reused LIFO,
at most `max_connections` exchanges in flight, idle ones closed after `keepalive_expiry`.

It speaks just what Asana's REST API needs: HTTP/1.1 without pipelining or upgrades, bodies
framed by Content-Length, chunked encoding or the connection's end. Failures are raised as
httpx's own exceptions, with httpx's meaning of "sent": ConnectError/ConnectTimeout/PoolTimeout
only when nothing left this process, so the client's retry rules for a POST stay right.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator

import httpx

#: Bytes a status line plus headers may take; more is a protocol error, not a memory hazard.
MAX_HEAD = 64 * 1024
_NO_BODY_STATUS = frozenset({204, 304})

Key = tuple[bytes, bytes, int]


class _Connection:
    """One socket: a reader, a writer and when it was last idle (monotonic seconds)."""

    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float, expiry: float) -> bool:
        """False when the server closed it (EOF or stray bytes waiting) or it idled too long."""
        reader = self.reader
        return (
            now - self.idle_since < expiry
            and not self.writer.is_closing()
            and not reader.at_eof()
            and not reader._buffer  # bytes nobody asked for: the connection is out of step
        )

    def close(self) -> None:
        self.writer.close()


class _Body(httpx.AsyncByteStream):
    """A response body already read in full (Asana's bodies are small JSON)."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._data


class StreamTransport(httpx.AsyncBaseTransport):
    """httpx.AsyncBaseTransport over asyncio streams with a LIFO keep-alive pool."""

    def __init__(
        self,
        *,
        limits: httpx.Limits | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        limits = limits or httpx.Limits()
        self._slots = asyncio.Semaphore(limits.max_connections or 100)
        self._max_idle = limits.max_keepalive_connections or 20
        self._expiry = limits.keepalive_expiry if limits.keepalive_expiry is not None else 5.0
        self._ssl_context = ssl_context
        self._idle: dict[Key, list[_Connection]] = {}
        self._closed = False

    # ----------------------------------------------------------------------- httpx's API

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        if self._closed:
            raise httpx.ConnectError("the transport is closed", request=request)
        key: Key = (scheme, url.raw_host, url.port or (443 if scheme == b"https" else 80))
        timeouts = request.extensions.get("timeout") or {}
        body = request.content if hasattr(request, "_content") else await request.aread()
        head = _request_head(request)
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no free connection in time", request=request) from None
        try:
            return await self._exchange(request, key, head, body, timeouts)
        finally:
            self._slots.release()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    # ------------------------------------------------------------------------- machinery

    async def _exchange(
        self,
        request: httpx.Request,
        key: Key,
        head: bytes,
        body: bytes,
        timeouts: dict[str, float | None],
    ) -> httpx.Response:
        connection = self._reuse(key) or await self._connect(request, key, timeouts)
        keep = False
        try:
            writer = connection.writer
            try:
                writer.write(head + body if len(body) < 16384 else head)
                if len(body) >= 16384:
                    writer.write(body)
                if writer.transport.get_write_buffer_size():
                    async with asyncio.timeout(timeouts.get("write")):
                        await writer.drain()
            except TimeoutError:
                raise httpx.WriteTimeout("timed out sending the request", request=request) from None
            except OSError as exc:
                raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from None
            try:
                async with asyncio.timeout(timeouts.get("read")):
                    status, reason, headers, content, keep = await _read_response(
                        connection.reader, request.method
                    )
            except TimeoutError:
                raise httpx.ReadTimeout(
                    "timed out waiting for the response", request=request
                ) from None
            except asyncio.IncompleteReadError:
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a complete response.", request=request
                ) from None
            except ValueError as exc:
                raise httpx.RemoteProtocolError(str(exc), request=request) from None
            except OSError as exc:
                raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from None
        finally:
            if keep:
                self._park(key, connection)
            else:
                connection.close()
        return httpx.Response(
            status,
            headers=headers,
            stream=_Body(content),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    def _reuse(self, key: Key) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.usable(now, self._expiry):
                return connection
            connection.close()
        return None

    def _park(self, key: Key, connection: _Connection) -> None:
        if self._closed:
            connection.close()
            return
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self._max_idle:
            idle.pop(0).close()
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def _connect(
        self, request: httpx.Request, key: Key, timeouts: dict[str, float | None]
    ) -> _Connection:
        scheme, host, port = key
        tls: ssl.SSLContext | None = None
        if scheme == b"https":
            if self._ssl_context is None:
                self._ssl_context = httpx.create_ssl_context()
            tls = self._ssl_context
        try:
            async with asyncio.timeout(timeouts.get("connect")):
                reader, writer = await asyncio.open_connection(
                    host.decode("ascii"),
                    port,
                    ssl=tls,
                    limit=MAX_HEAD,
                    server_hostname=host.decode("ascii") if tls else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout("timed out connecting", request=request) from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from None
        return _Connection(reader, writer)


def _request_head(request: httpx.Request) -> bytes:
    """The request line and headers, as httpx built them (Host, Content-Length included)."""
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    lines += [name + b": " + value for name, value in request.headers.raw]
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


async def _read_response(
    reader: asyncio.StreamReader, method: str
) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes, bool]:
    """(status, reason, headers, body, keep-alive) of one response; 1xx ones are skipped."""
    while True:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise ValueError("response head too large") from None
        lines = raw[:-4].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ValueError("malformed status line")
        status = int(parts[1])
        if not 100 <= status <= 999:
            raise ValueError("malformed status code")
        if status >= 200 or status == 101:
            break
    headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    chunked = False
    close = parts[0] == b"HTTP/1.0"
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise ValueError("malformed header line")
        value = value.strip()
        headers.append((name, value))
        lower = name.lower()
        if lower == b"content-length":
            if not value.isdigit() or (length is not None and length != int(value)):
                raise ValueError("malformed Content-Length")
            length = int(value)
        elif lower == b"transfer-encoding":
            chunked = value.lower().endswith(b"chunked")
        elif lower == b"connection":
            tokens = {t.strip() for t in value.lower().split(b",")}
            if b"close" in tokens:
                close = True
            elif b"keep-alive" in tokens:
                close = False
    reason = parts[2] if len(parts) > 2 else b""
    if status == 101:
        raise ValueError("unexpected protocol switch")
    if method == "HEAD" or status in _NO_BODY_STATUS or status < 200:
        return status, reason, headers, b"", not close
    if chunked:
        return status, reason, headers, await _read_chunked(reader), not close
    if length is not None:
        return status, reason, headers, await reader.readexactly(length), not close
    return status, reason, headers, await reader.read(), False


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ValueError("malformed chunk size") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, ignored
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise ValueError("malformed chunk end")
