"""The HTTP server under slow and odd clients, on the real `asana-export-bot run` process.

A client that sends headers and then stalls or trickles its body, one that vanishes mid-request,
a deeply nested JSON body, and a port somebody else holds. The bot runs with a soft limit on
open files (`BOT_FILES`) that 800 held connections would exhaust without `HTTP_MAX_CONNECTIONS`,
and with a short `HTTP_READ_TIMEOUT_SECONDS` so the test does not wait ten seconds per round.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.demo.signing import (
    async_post_signed,
    form_body,
    post_signed,
    slash_command_form,
)
from bot.http_limits import (
    HttpLimits,
    LimitedSite,
    ListenError,
    bind_listener,
    files_warning,
    quiet_disconnects,
)
from bot.testing import bot_environment, wait_until
from bot.testing.process import SIGNING_SECRET, BotProcess, console_script
from tests.conftest import ASANA_TOKEN

READ_TIMEOUT = 2.0
#: How late past its deadline a stalled connection may be closed on a loaded two-core machine.
CLOSE_MARGIN = 3.0
#: The bot's soft RLIMIT_NOFILE: below 800 connections plus what the bot itself holds, above the
#: default cap (256) plus what asyncio accepts and closes in one go (2 x 128) plus the bot's own.
BOT_FILES = 700
STORM = 800
#: Slack's limit for acknowledging a slash command.
ACK_LIMIT = 3.0

_HEAD = (
    "POST /slack/events HTTP/1.1\r\n"
    "Host: 127.0.0.1\r\n"
    "Content-Type: application/x-www-form-urlencoded\r\n"
    "X-Slack-Request-Timestamp: {ts}\r\n"
    "X-Slack-Signature: v0=0000000000000000000000000000000000000000000000000000000000000000\r\n"
    "Content-Length: 4000\r\n"
    "{extra}"
    "\r\n"
)


def request_head(extra: str = "") -> bytes:
    """Headers promising a 4,000-byte body that never comes in full."""
    return _HEAD.format(ts=int(time.time()), extra=extra).encode()


@dataclass
class LimitedBot:
    bot: BotProcess
    slack: FakeSlack

    @property
    def port(self) -> int:
        return self.bot.port

    def log_size(self) -> int:
        return self.bot.log_path.stat().st_size if self.bot.log_path.exists() else 0

    def log_since(self, offset: int) -> str:
        return self.bot.log_path.read_bytes()[offset:].decode("utf-8", "replace")

    def command_body(self) -> bytes:
        return form_body(
            slash_command_form(text="help", response_url=self.slack.new_response_url())
        )

    def assert_alive(self) -> None:
        assert self.bot.proc is not None and self.bot.proc.poll() is None, "the bot died"
        assert httpx.get(self.bot.health_url, timeout=5.0).status_code == 200


def _raise_own_file_limit(need: int) -> None:
    """The test itself holds 800 sockets: make sure its own soft limit allows that."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        if target < need:
            pytest.skip(f"the test needs {need} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LimitedBot]:
    _raise_own_file_limit(STORM * 2 + 256)
    workdir = tmp_path_factory.mktemp("http-limits")
    with FakeAsana(token=ASANA_TOKEN) as asana, FakeSlack() as slack:
        env = bot_environment(
            asana,
            slack,
            f"sqlite:///{workdir / 'bot.db'}",
            HTTP_READ_TIMEOUT_SECONDS=str(READ_TIMEOUT),
        )
        env.pop("ASANA_MAX_RETRY_SECONDS")  # this bot keeps the default
        bot = BotProcess(workdir, env, max_open_files=BOT_FILES).start()
        try:
            yield LimitedBot(bot, slack)
        finally:
            bot.stop()


#: Loggers that speak about HTTP connections (the rest is the watcher and the database).
_CONNECTION_LOGGERS = ("bot.http_limits", "bot.app", "aiohttp", "asyncio")


def connection_lines(log: str) -> list[str]:
    """Log lines about HTTP connections: `<date> <time> <LEVEL> <logger>: <message>`."""
    found = []
    for line in log.splitlines():
        parts = line.split(" ", 4)
        name = parts[3].rstrip(":") if len(parts) > 3 else ""
        if name.startswith(_CONNECTION_LOGGERS) or not name:
            found.append(line)
    return found


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


# --------------------------------------------------------------------------- stalled bodies


@dataclass
class Held:
    """One slow client: how it misbehaves, and when it got in and when the bot closed it."""

    kind: str
    opened: float | None = None
    closed: float | None = None


async def hold(port: int, held: Held, tried: Callable[[], None]) -> None:
    """Connect, send part of a request, then stall (or trickle a byte every 0.4 s) until closed."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    except (OSError, TimeoutError):
        tried()
        return
    held.opened = time.monotonic()
    tried()
    head = request_head()
    writer.write(head[: len(head) // 2] if held.kind == "mid-headers" else head + b"token=x&")
    try:
        while True:
            try:
                data = await asyncio.wait_for(reader.read(65536), 0.4)
            except TimeoutError:
                if held.kind == "trickle":
                    writer.write(b"a")
                continue
            if not data:
                break  # the bot closed the connection
    except OSError:
        pass  # reset by the bot: closed as well
    held.closed = time.monotonic()
    writer.close()


@dataclass
class Command:
    status: int | None
    elapsed: float
    held_open: int


@dataclass
class Storm:
    held: list[Held]
    commands: list[Command] = field(default_factory=list)
    peak_files: int = 0


async def storm_and_commands(limited: LimitedBot) -> Storm:
    kinds = ("stall", "stall", "trickle", "mid-headers")
    storm = Storm([Held(kinds[i % len(kinds)]) for i in range(STORM)])
    assert limited.bot.proc is not None
    pid = limited.bot.proc.pid

    def still_held() -> int:
        return sum(1 for h in storm.held if h.opened is not None and h.closed is None)

    async def watch_files() -> None:
        while True:
            storm.peak_files = max(storm.peak_files, open_files(pid))
            await asyncio.sleep(0.05)

    all_tried = asyncio.Event()
    attempts = 0

    def tried() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == STORM:
            all_tried.set()

    async def commands() -> None:
        await all_tried.wait()  # the newest slow clients are still being held now
        for _ in range(5):
            held_open = still_held()
            start = time.monotonic()
            try:
                resp = await asyncio.wait_for(
                    async_post_signed(
                        limited.bot.events_url, limited.command_body(), secret=SIGNING_SECRET
                    ),
                    ACK_LIMIT + 2,
                )
                status: int | None = resp.status
            except (httpx.HTTPError, TimeoutError):
                status = None
            storm.commands.append(Command(status, time.monotonic() - start, held_open))

    watcher = asyncio.create_task(watch_files())
    try:
        await asyncio.wait_for(
            asyncio.gather(commands(), *(hold(limited.port, h, tried) for h in storm.held)),
            READ_TIMEOUT + CLOSE_MARGIN + 20,
        )
    except TimeoutError:
        pass  # judged below: whatever is still open was never closed by the bot
    finally:
        watcher.cancel()
    return storm


def test_stalled_requests_are_cut_and_commands_still_answered(limited: LimitedBot) -> None:
    log_at = limited.log_size()
    storm = asyncio.run(storm_and_commands(limited))

    opened = [h for h in storm.held if h.opened is not None]
    never_closed = [h for h in opened if h.closed is None]
    late = [
        h
        for h in opened
        if h.closed is not None and h.closed - h.opened > READ_TIMEOUT + CLOSE_MARGIN
    ]  # type: ignore[operator]
    worst = max((h.closed - h.opened for h in opened if h.closed is not None), default=0.0)  # type: ignore[operator]
    print(
        f"\n{len(opened)}/{STORM} slow connections got in; bot's peak open files "
        f"{storm.peak_files} (soft limit {BOT_FILES}); longest held {worst:.2f}s; commands "
        + ", ".join(f"{c.status}@{c.elapsed:.2f}s/{c.held_open} held" for c in storm.commands)
    )
    assert len(storm.commands) == 5
    for command in storm.commands:
        assert command.status == 200 and command.elapsed < ACK_LIMIT, storm.commands
    assert all(c.held_open >= 100 for c in storm.commands), "commands must meet slow clients"
    assert len(opened) == STORM, "the bot stopped accepting connections"
    assert not never_closed, f"{len(never_closed)} stalled connections were never closed"
    assert not late, f"{len(late)} closed later than {READ_TIMEOUT + CLOSE_MARGIN}s"

    limited.assert_alive()
    log = limited.log_since(log_at)
    assert "Traceback" not in log, log[-3000:]
    lines = connection_lines(log)
    assert len(lines) <= STORM + 10, "more than one line per connection"
    assert max(map(len, lines), default=0) < 300, "short lines"


# --------------------------------------------------------------------------- disconnects


async def vanish(port: int) -> bool:
    """Send headers, wait until the bot's handler is reading the body, then reset (RST)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    try:
        writer.write(request_head("Expect: 100-continue\r\n"))
        line = await asyncio.wait_for(reader.readline(), 10)
        if b" 100 " not in line:
            return False
        await asyncio.wait_for(reader.readline(), 10)  # the blank line after 100 Continue
        writer.write(b"token=x&")
        await writer.drain()
        return True
    finally:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()


async def vanish_many(port: int, total: int, batch: int = 100) -> int:
    reached = 0
    for _ in range(total // batch):
        results = await asyncio.gather(*(vanish(port) for _ in range(batch)))
        reached += sum(results)
    return reached


def test_clients_that_vanish_leave_one_line_each(limited: LimitedBot) -> None:
    log_at = limited.log_size()
    reached = asyncio.run(vanish_many(limited.port, STORM))
    assert reached == STORM, "every client got as far as the body before going away"

    def logged_each() -> bool:
        log = limited.log_since(log_at)
        return log.count("client went away") + log.count("Error handling request") >= STORM

    with contextlib.suppress(AssertionError):  # the count is asserted below, with the log
        wait_until(logged_each, 20, "a line for each client that went away")
    limited.assert_alive()
    log = limited.log_since(log_at)
    assert "Traceback" not in log, log[-3000:]
    assert log.count("client went away") == STORM, log[-3000:]
    lines = connection_lines(log)
    assert len(lines) <= STORM + 10, "one line per vanished client"
    assert max(map(len, lines), default=0) < 300, "short lines"


# --------------------------------------------------------------------------- nested JSON


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b"[" * 100_000, "application/json", id="json-body"),
        pytest.param(
            b'{"type":"event_callback","event":' + b"[" * 100_000,
            "application/json",
            id="json-event",
        ),
        pytest.param(
            form_body({"payload": "[" * 100_000}),
            "application/x-www-form-urlencoded",
            id="form-payload",
        ),
        pytest.param(
            form_body(
                {
                    "payload": '{"type":"block_actions","actions":'
                    + "[" * 100_000
                    + "]" * 100_000
                    + "}"
                }
            ),
            "application/x-www-form-urlencoded",
            id="form-payload-closed",
        ),
    ],
)
def test_deeply_nested_json_gets_4xx(limited: LimitedBot, body: bytes, content_type: str) -> None:
    log_at = limited.log_size()
    resp = post_signed(
        limited.bot.events_url, body, secret=SIGNING_SECRET, content_type=content_type, timeout=10
    )
    assert 400 <= resp.status < 500, (resp.status, resp.body_text[:200])
    assert resp.elapsed < ACK_LIMIT
    limited.assert_alive()
    assert "Traceback" not in limited.log_since(log_at)


# --------------------------------------------------------------------------- port in use


@pytest.mark.parametrize("mode", ["http", "socket"])
def test_port_in_use_is_one_line_and_exit_78(
    mode: str, bot_env: dict[str, str], fake_slack: FakeSlack, tmp_path: Path
) -> None:
    # WARNING: start-up INFO lines (alembic plugins) are not what this test is about.
    env = {**os.environ, **bot_env, "LOG_LEVEL": "WARNING", "HOST": "127.0.0.1"}
    if mode == "socket":
        env.update(SLACK_APP_TOKEN=fake_slack.app_token, SLACK_SIGNING_SECRET="")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env["PORT"] = str(port)
        result = subprocess.run(
            [console_script(), "run"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=30,
            check=False,
        )
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    lines = [line for line in output.splitlines() if line.strip()]
    assert result.returncode == 78, output
    assert len(lines) == 1, output
    assert "PORT" in lines[0] and str(port) in lines[0] and "127.0.0.1" in lines[0], output
    if mode == "socket":
        assert fake_slack.connections_opened == 0, "nothing starts before the port is bound"


# --------------------------------------------------------------------------- the pieces, in process


def test_files_warning_names_the_setting() -> None:
    assert files_warning(256, 1024) is None
    assert files_warning(256, resource.RLIM_INFINITY) is None
    warning = files_warning(900, 1024)
    assert warning is not None and "HTTP_MAX_CONNECTIONS=900" in warning


def test_bind_listener_says_which_setting_to_change() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ListenError, match=rf"PORT {port} on HOST 127.0.0.1 is already in use"):
            bind_listener("127.0.0.1", port)
    bind_listener("127.0.0.1", port).close()  # free again


async def test_busy_connections_are_kept_and_the_newcomer_gets_503() -> None:
    """With every open connection busy on a whole request, a new one is refused, not them."""
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await request.read()
        await release.wait()
        return web.Response(text="done")

    app = web.Application(middlewares=[quiet_disconnects])
    app.router.add_post("/", slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = bind_listener("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    await LimitedSite(runner, sock, HttpLimits(read_timeout=5.0, max_connections=2)).start()
    try:
        async with (
            httpx.AsyncClient(timeout=5.0) as first,
            httpx.AsyncClient(timeout=5.0) as second,
        ):
            busy = [
                asyncio.create_task(client.post(url, content=b"x" * 10))
                for client in (first, second)
            ]
            deadline = time.monotonic() + 5
            while runner.server is not None and len(runner.server.connections) < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            async with httpx.AsyncClient(timeout=5.0) as third:
                try:
                    refused: int | str = (await third.post(url, content=b"y")).status_code
                except httpx.TransportError as exc:  # the 503 is sent before the request is read
                    refused = type(exc).__name__
            release.set()
            answers = await asyncio.gather(*busy)
    finally:
        await runner.cleanup()
    assert refused in (503, "ReadError", "RemoteProtocolError"), refused
    assert [a.text for a in answers] == ["done", "done"]
