"""bot.asana.transport on the wire: a scripted HTTP/1.1 server on 127.0.0.1 answers each request
with the bytes a test gives it, so framing, keep-alive and failures are the transport's alone.
(The Asana client's behaviour over it is tests/test_asana_client.py, against the fake Asana.)
"""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from bot.asana.transport import StreamTransport

pytestmark = pytest.mark.timeout(30)

Answer = Callable[[bytes], bytes | None]  # the request's head+body -> bytes to send, None: hang up


@dataclass
class Script:
    """A server that reads one request at a time and answers with the next scripted bytes."""

    answers: list[Answer]
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    hold: asyncio.Event | None = None
    #: Set whenever a request arrives (tests wait on it instead of sleeping).
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                self.arrived.set()
                if self.hold is not None:
                    await self.hold.wait()
                self.in_flight -= 1
                answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
                data = answer(request)
                if data is None:
                    return
                writer.write(data)
                await writer.drain()
                if b"connection: close" in data.lower():
                    return
        finally:
            writer.close()


async def until(script: Script, condition: Callable[[], bool]) -> None:
    """Wait for requests to arrive until `condition` holds."""
    async with asyncio.timeout(10):
        while not condition():
            script.arrived.clear()
            await script.arrived.wait()


def ok(body: bytes = b'{"data": {}}', *extra: bytes) -> Answer:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    return lambda _: (
        head
        + b"".join(e + b"\r\n" for e in extra)
        + (b"Content-Length: %d\r\n\r\n" % len(body) + body)
    )


def raw(data: bytes | None) -> Answer:
    return lambda _: data


@pytest.fixture
async def server() -> AsyncIterator[tuple[Script, str]]:
    script = Script([ok()])
    srv = await asyncio.start_server(script.serve, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        yield script, f"http://127.0.0.1:{port}"
        srv.close()


def client(**limits: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=StreamTransport(limits=httpx.Limits(**limits) if limits else None), timeout=2.0
    )


async def test_keep_alive_reuses_one_connection(server: tuple[Script, str]) -> None:
    script, url = server
    async with client() as http:
        for _ in range(5):
            response = await http.get(f"{url}/x?opt_fields=a,b")
            assert response.status_code == 200
            assert response.json() == {"data": {}}
    assert script.connections == 1
    first = script.requests[0].decode()
    assert first.startswith("GET /x?opt_fields=a,b HTTP/1.1\r\n")
    assert "host: 127.0.0.1:" in first.lower()


async def test_post_body_and_headers_arrive(server: tuple[Script, str]) -> None:
    script, url = server
    async with client() as http:
        response = await http.post(f"{url}/e", json={"data": {"organization": "1"}})
    assert response.status_code == 200
    request = script.requests[0]
    assert request.startswith(b"POST /e HTTP/1.1\r\n")
    assert request.endswith(b'{"data":{"organization":"1"}}')


async def test_chunked_gzip_and_informational_responses(server: tuple[Script, str]) -> None:
    script, url = server
    body = gzip.compress(b'{"data": {"gid": "7"}}')
    chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(part), part) for part in (body[:5], body[5:]))
    script.answers[:] = [
        raw(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
            + chunked
            + b"0\r\nX-Trailer: t\r\n\r\n"
        ),
        ok(b"{}"),
    ]
    async with client() as http:
        first = await http.get(f"{url}/a")
        second = await http.get(f"{url}/b")
    assert first.json() == {"data": {"gid": "7"}}
    assert second.json() == {}
    assert script.connections == 1, "a chunked body leaves the connection reusable"


async def test_connection_close_and_unframed_bodies_are_not_reused(
    server: tuple[Script, str],
) -> None:
    script, url = server
    script.answers[:] = [
        ok(b"{}", b"Connection: close"),
        raw(b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n{}"),  # no length: to the end
        ok(b"{}"),
    ]
    async with client() as http:
        for _ in range(3):
            assert (await http.get(f"{url}/a")).json() == {}
    assert script.connections == 3


async def test_a_connection_the_server_closed_while_idle_is_not_reused(
    server: tuple[Script, str],
) -> None:
    script, url = server
    script.answers[:] = [ok(b"{}"), raw(None), ok(b"{}")]
    async with client() as http:
        assert (await http.get(f"{url}/a")).status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):  # hung up instead of answering
            await http.get(f"{url}/b")
        assert (await http.get(f"{url}/c")).status_code == 200
    assert script.connections == 2


async def test_idle_connection_closed_by_the_server_is_dropped_before_use(
    server: tuple[Script, str],
) -> None:
    script, url = server
    script.answers[:] = [ok(b"{}", b"Connection: close"), ok(b"{}")]
    async with client() as http:
        await http.get(f"{url}/a")
        await asyncio.sleep(0)  # the EOF reaches the idle connection (it is not parked anyway)
        await http.get(f"{url}/b")
    assert script.connections == 2


@pytest.mark.parametrize(
    "data",
    [
        b"SPDY/3 200 OK\r\n\r\n",
        b"HTTP/1.1 2xx OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",  # then hangs up
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ],
)
async def test_malformed_or_truncated_responses_are_protocol_errors(data: bytes) -> None:
    # The server hangs up after its bytes, so a truncated answer ends in EOF, not a timeout.
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(data)
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(f"http://127.0.0.1:{port}/a")


async def test_a_silent_server_is_a_read_timeout(server: tuple[Script, str]) -> None:
    script, url = server
    script.hold = asyncio.Event()
    async with client() as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"{url}/a", timeout=0.3)
    script.hold.set()


async def test_a_closed_port_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/a")


async def test_in_flight_exchanges_are_bounded_and_wait_for_the_pool(
    server: tuple[Script, str],
) -> None:
    script, url = server
    script.hold = asyncio.Event()
    async with client(max_connections=3, max_keepalive_connections=3) as http:
        calls = [asyncio.create_task(http.get(f"{url}/{i}")) for i in range(8)]
        await until(script, lambda: script.in_flight == 3)
        with pytest.raises(httpx.PoolTimeout):
            await http.get(f"{url}/late", timeout=httpx.Timeout(2.0, pool=0.2))
        script.hold.set()
        assert [r.status_code for r in await asyncio.gather(*calls)] == [200] * 8
    assert script.most_in_flight == 3
    assert script.connections == 3


async def test_a_cancelled_exchange_closes_its_connection(server: tuple[Script, str]) -> None:
    script, url = server
    script.hold = asyncio.Event()
    async with client() as http:
        task = asyncio.create_task(http.get(f"{url}/a"))
        await until(script, lambda: script.in_flight == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        script.hold.set()
        assert (await http.get(f"{url}/b")).status_code == 200
    assert script.connections == 2, "the half-answered connection was not reused"


async def test_a_closed_transport_refuses_and_other_schemes_are_unsupported() -> None:
    transport = StreamTransport()
    with pytest.raises(httpx.UnsupportedProtocol):
        await transport.handle_async_request(httpx.Request("GET", "ftp://127.0.0.1/a"))
    await transport.aclose()
    with pytest.raises(httpx.ConnectError):
        await transport.handle_async_request(httpx.Request("GET", "http://127.0.0.1:1/a"))


def test_the_client_uses_it_unless_the_environment_names_a_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bot.asana.client import _default_transport

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "example.invalid")
    assert isinstance(_default_transport(httpx.Limits()), StreamTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert _default_transport(httpx.Limits()) is None, "httpx's own transports speak proxies"
