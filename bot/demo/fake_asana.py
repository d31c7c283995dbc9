"""A fake Asana API for organization exports: real HTTP on 127.0.0.1, scripted and faulty on demand.

It runs an aiohttp server in its own thread with its own event loop, so synchronous tests, async
tests and a bot subprocess can all talk to it, and a test may block without starving it. Every
public method is thread-safe.

Typical use::

    with FakeAsana() as asana:
        asana.script("1001", ["pending", "started", "finished"])
        asana.fail(429, retry_after=1)            # the next request gets a 429
        ...                                       # point the bot at asana.base_url
        assert asana.requests_for("1001")[0].status == 429

Export files: `serve_file(gid, size)` makes a finished export's download_url a presigned-looking
link to this server's own `/files/...` route, which serves a generated gzip file of that size
(`bot.demo.export_files`) with Content-Length, ETag (its MD5, as S3 gives for one part),
Content-Disposition and Range/If-Range; links expire (403 AccessDenied, as S3 says it) after
`expires_after` seconds or when `expire_links` is called. `file_fault` queues the faults of a
download: drop the connection or stall after N bytes, ignore Range, corrupt a byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import math
import re
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

from bot.demo.export_files import ExportFile, export_file

API_PREFIX = "/api/1.0"
DEFAULT_TOKEN = "asana-test-token"
DEFAULT_ORGANIZATION_GID = "1100000000000001"
HELP = (
    "For more information on API status codes and how to handle them, "
    "read the docs on errors: https://developers.asana.com/docs/errors"
)

#: Asana-like default messages per status (the real API words them much like this).
DEFAULT_MESSAGES: dict[int, str] = {
    400: "Bad Request",
    401: "Not Authorized",
    402: "This feature is only available to Enterprise organizations.",
    403: "Forbidden",
    404: "Not Found",
    429: "You have made too many requests recently. Please, be chill.",
    500: "Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

#: GET /users/me for the token: Asana's UserResponse (gid, resource_type, name, email, photo,
#: workspaces); the vendored OAS subset has no users path, so this follows Asana's docs.
DEFAULT_ME: dict[str, Any] = {
    "gid": "1100000000000099",
    "resource_type": "user",
    "name": "Export Service Account",
    "email": "export-bot@example.com",
    "photo": None,
    "workspaces": [
        {"gid": DEFAULT_ORGANIZATION_GID, "resource_type": "workspace", "name": "Acme Corp"}
    ],
}

FILES_PREFIX = "/files/"
#: What S3 answers to a presigned GET after X-Amz-Expires (the status is 403).
EXPIRED_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    "<Message>Request has expired</Message><X-Amz-Expires>3600</X-Amz-Expires>"
    "<RequestId>FAKE</RequestId></Error>"
)
FIELDS = ("created_at", "download_url", "organization", "organization.name", "state")
Advance = Literal["per_request", "manual"]
_GID_OK = re.compile(r"^[0-9]+$")


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake saw it; `status` is what it answered (None: connection dropped)."""

    method: str
    path: str
    gid: str | None
    query: dict[str, str]
    headers: dict[str, str]  # header names lower-cased
    body: Any  # parsed JSON when it parses, else the raw text, None when empty
    at: float  # time.monotonic() at arrival (comparable across processes on Linux)
    wall: float  # time.time() at arrival
    status: int | None
    #: The client's TCP port: equal ports on two requests mean a reused keep-alive connection.
    client_port: int | None = None


@dataclass(frozen=True, slots=True)
class Flip:
    """One change of an export's state on the server side."""

    state: str
    at: float  # time.monotonic()
    wall: float  # time.time()


@dataclass
class _Export:
    gid: str
    state: str
    organization_gid: str | None
    organization_name: str | None
    created_at: str | None
    download_url: str | Callable[[], str] | None
    extra: dict[str, Any]
    script: list[str] | None = None
    advance: Advance = "per_request"
    index: int = 0
    flips: list[Flip] = field(default_factory=list)
    minted: list[str] = field(default_factory=list)


@dataclass
class _Fault:
    status: int | None
    gid: str | None
    method: str | None
    times: int
    retry_after: float | None
    body: Any
    phrase: str | None
    delay: float
    reset: bool
    malformed: bool
    missing_data: bool
    wrong_gid: str | None


@dataclass
class _Plan:
    """What to answer to one request, decided under the lock, sent after it."""

    status: int | None
    payload: Any = None  # JSON-able object, or bytes/str sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _phrase(n: int) -> str:
    """An error phrase in the style of node-asana-phrase ("6 sad squid snuggle softly")."""
    adjectives = ("sad", "happy", "sleepy", "brave", "quiet", "shiny")
    animals = ("squid", "otters", "lemurs", "owls", "ferrets", "yaks")
    verbs = ("snuggle", "dance", "wander", "sing", "ponder", "bounce")
    adverbs = ("softly", "loudly", "slowly", "boldly", "gently", "wildly")
    return (
        f"{n % 9 + 2} {adjectives[n % 6]} {animals[(n // 6) % 6]} "
        f"{verbs[(n // 36) % 6]} {adverbs[(n // 216) % 6]}"
    )


def error_body(message: str | None, *, phrase: str | None = None) -> dict[str, Any]:
    """Asana's error envelope."""
    error: dict[str, Any] = {"message": message or "Error", "help": HELP}
    if phrase:
        error["phrase"] = phrase
    return {"errors": [error]}


def presigned_url(organization_gid: str, export_gid: str) -> str:
    """A fresh S3-presigned-looking link, unique per call, like the one Asana mints per request."""
    signature = uuid.uuid4().hex + uuid.uuid4().hex
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return (
        "https://asana-export-us-east-1.s3.us-east-1.amazonaws.com/"
        f"{organization_gid}/domain_export/{export_gid}/download/"
        f"domain_export_{organization_gid}_{export_gid}.json.gz"
        "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential=ASIAFAKE%2F{stamp[:8]}%2Fus-east-1%2Fs3%2Faws4_request"
        f"&X-Amz-Date={stamp}&X-Amz-Expires=3600"
        f"&X-Amz-Security-Token=FAKE{uuid.uuid4().hex}"
        f"&X-Amz-Signature={signature}&X-Amz-SignedHeaders=host&x-id=GetObject"
    )


@dataclass
class _File:
    """An export's file, served at /files/ through the links minted for it."""

    gid: str
    file: ExportFile
    filename: str
    expires_after: float
    etag: bool


@dataclass
class _Link:
    gid: str
    issued: float  # time.monotonic()
    expires_after: float


@dataclass
class _FileFault:
    gid: str | None
    times: int
    drop_after: int | None
    stall_after: int | None
    stall_seconds: float
    ignore_range: bool
    corrupt_at: int | None
    status: int | None


@dataclass(frozen=True, slots=True)
class FileRequest:
    """One GET of an export file: what was asked and what was answered (None: no answer)."""

    gid: str | None
    range: str | None
    if_range: str | None
    status: int | None
    #: Body bytes sent before the connection was dropped or the answer was complete.
    sent: int
    expired: bool
    at: float


class FakeAsana:
    """A scripted, recording, fault-injecting Asana API server on 127.0.0.1 (random port)."""

    def __init__(
        self, token: str = DEFAULT_TOKEN, *, rate_clock: Callable[[], float] = time.monotonic
    ) -> None:
        """`rate_clock` drives only the rate-limit window, so tests can slide it without waiting."""
        self._rate_clock = rate_clock
        self._lock = threading.RLock()
        self._token = token
        self._exports: dict[str, _Export] = {}
        self._organizations: dict[str, str] = {DEFAULT_ORGANIZATION_GID: "Acme Corp"}
        self._me: dict[str, Any] = dict(DEFAULT_ME)
        self._faults: list[_Fault] = []
        self._delays: dict[str | None, float] = {}
        self._rate_limit: int | None = None
        self._window: deque[float] = deque()
        self._requests: list[RecordedRequest] = []
        self._gids = itertools.count(1_210_000_000_000_001)
        self._phrases = itertools.count(7)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._port: int | None = None
        self._files: dict[str, _File] = {}
        self._links: dict[str, _Link] = {}
        self._file_faults: list[_FileFault] = []
        self._file_requests: list[FileRequest] = []

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> FakeAsana:
        """Start serving in a background thread; returns once the port is bound."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(ready))
            except BaseException as exc:  # surfaced to start()
                failure.append(exc)
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="FakeAsana", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("FakeAsana did not start within 10 s")
        if failure:
            raise RuntimeError("FakeAsana failed to start") from failure[0]
        return self

    def stop(self) -> None:
        """Stop serving and join the thread (pending hung requests are cancelled)."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or loop is None or stopping is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(stopping.set)
        thread.join(10)
        self._thread = None

    def __enter__(self) -> FakeAsana:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeAsana is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """What to give the client as its base URL."""
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    async def _serve(self, ready: threading.Event) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that gives up on a hung request frees its handler.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.2
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._port = runner.addresses[0][1]
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    # ---------------------------------------------------------------- scripting

    @property
    def token(self) -> str:
        with self._lock:
            return self._token

    def set_token(self, token: str) -> None:
        """Change the accepted token (e.g. to act out a revoked one)."""
        with self._lock:
            self._token = token

    def set_organization(self, gid: str, name: str) -> None:
        """Name an organization, for exports created by POST."""
        with self._lock:
            self._organizations[gid] = name

    def set_me(self, **fields: Any) -> None:
        """Change what GET /users/me says about the token's user (gid, name, email...)."""
        with self._lock:
            self._me.update(fields)

    def set_export(
        self,
        gid: str,
        state: str = "pending",
        organization_gid: str | None = DEFAULT_ORGANIZATION_GID,
        organization_name: str | None = None,
        created_at: str | None = None,
        download_url: str | Callable[[], str] | None = None,
        *,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Create or replace an export (any script on it is dropped).

        `download_url`: None mints a fresh presigned-looking URL per request once finished; a
        string is returned as is; a callable is called per request. `organization_gid=None`
        leaves the organization out (null); `created_at=None` means now. `extra` fields are
        added to every representation (to test tolerance of novelties).
        """
        with self._lock:
            if organization_gid is not None and organization_name is None:
                organization_name = self._organizations.get(
                    organization_gid, f"Organization {organization_gid}"
                )
            self._exports[gid] = _Export(
                gid=gid,
                state=state,
                organization_gid=organization_gid,
                organization_name=organization_name,
                created_at=created_at or _now_iso(),
                download_url=download_url,
                extra=dict(extra or {}),
            )

    def set_state(self, gid: str, state: str) -> None:
        """Flip an existing export to `state` now (recorded in `flips`)."""
        with self._lock:
            self._set_state(self._get(gid), state)

    def script(self, gid: str, states: list[str], *, advance: Advance = "per_request") -> None:
        """Give an export a sequence of states, creating it if needed.

        per_request: each served GET answers the next state, then stays on the last one.
        manual: the export sits on states[0] until the test calls `advance(gid)`.
        """
        if not states:
            raise ValueError("states must not be empty")
        if advance not in ("per_request", "manual"):
            raise ValueError(f"unknown advance mode {advance!r}")
        with self._lock:
            if gid not in self._exports:
                self.set_export(gid, states[0])
            export = self._exports[gid]
            export.script, export.advance, export.index = list(states), advance, 0
            export.state = states[0]

    def advance(self, gid: str) -> str:
        """Move a scripted export to its next state (stays on the last); returns the state."""
        with self._lock:
            export = self._get(gid)
            if export.script is None:
                raise ValueError(f"export {gid} has no script")
            self._step(export)
            return export.state

    def state(self, gid: str) -> str:
        with self._lock:
            return self._get(gid).state

    def flips(self, gid: str) -> list[Flip]:
        """Every state change of an export after it was set up, in order."""
        with self._lock:
            return list(self._get(gid).flips)

    def flip_times(self, gid: str) -> list[float]:
        """time.monotonic() of each state change of an export."""
        return [flip.at for flip in self.flips(gid)]

    def download_urls(self, gid: str) -> list[str]:
        """Every download_url served for an export, in order (each request mints a new one)."""
        with self._lock:
            return list(self._get(gid).minted)

    def export_gids(self) -> list[str]:
        with self._lock:
            return list(self._exports)

    def _get(self, gid: str) -> _Export:
        try:
            return self._exports[gid]
        except KeyError:
            raise KeyError(f"no export {gid} in the fake") from None

    def _set_state(self, export: _Export, state: str) -> None:
        if state != export.state:
            export.state = state
            export.flips.append(Flip(state, time.monotonic(), time.time()))

    def _step(self, export: _Export) -> None:
        assert export.script is not None
        if export.index < len(export.script) - 1:
            export.index += 1
            self._set_state(export, export.script[export.index])

    # ---------------------------------------------------------------- export files

    def serve_file(
        self,
        gid: str,
        size: int,
        *,
        expires_after: float = 3600.0,
        filename: str | None = None,
        etag: bool = True,
    ) -> ExportFile:
        """Serve a generated gzip file of `size` bytes as export `gid`'s download.

        Each download_url minted from now on is a link to this server, valid `expires_after`
        seconds. `etag=False` leaves the ETag out (as for a multipart object, whose ETag is no
        MD5). Returns the file, whose `sha256`/`md5` tests compare with.
        """
        with self._lock:
            export = self._get(gid)
            name = filename or (f"domain_export_{export.organization_gid or '0'}_{gid}.json.gz")
            served = export_file(size)
            self._files[gid] = _File(gid, served, name, expires_after, etag)
            export.download_url = lambda: self._mint_file_link(gid)
            return served

    def _mint_file_link(self, gid: str) -> str:
        with self._lock:
            served = self._files[gid]
            token = uuid.uuid4().hex + uuid.uuid4().hex
            self._links[token] = _Link(gid, time.monotonic(), served.expires_after)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            export = self._exports[gid]
            return (
                f"http://127.0.0.1:{self.port}{FILES_PREFIX}{export.organization_gid or '0'}/"
                f"{gid}/{served.filename}?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                f"&X-Amz-Date={stamp}&X-Amz-Expires={math.ceil(served.expires_after)}"
                f"&X-Amz-Signature={token}&X-Amz-SignedHeaders=host"
            )

    def expire_links(self, gid: str | None = None) -> None:
        """Every link minted so far (for `gid`, or all) has expired: 403 from now on."""
        with self._lock:
            for link in self._links.values():
                if gid is None or link.gid == gid:
                    link.expires_after = -1.0

    def file_fault(
        self,
        gid: str | None = None,
        *,
        times: int = 1,
        drop_after: int | None = None,
        stall_after: int | None = None,
        stall_seconds: float = 3600.0,
        ignore_range: bool = False,
        corrupt_at: int | None = None,
        status: int | None = None,
    ) -> None:
        """Queue a fault for the next `times` downloads (of `gid`, or any).

        `drop_after`: send that many body bytes, then close the connection. `stall_after`: send
        that many, then send nothing for `stall_seconds`. `ignore_range`: answer 200 with the
        whole file whatever Range says. `corrupt_at`: flip the byte at that file offset (the
        ETag and Content-Length stay the file's). `status`: answer that status, no body.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._file_faults.append(
                _FileFault(
                    gid,
                    times,
                    drop_after,
                    stall_after,
                    stall_seconds,
                    ignore_range,
                    corrupt_at,
                    status,
                )
            )

    def file_requests(self, gid: str | None = None) -> list[FileRequest]:
        """Every download of `gid` (or all), in order."""
        with self._lock:
            return [r for r in self._file_requests if gid is None or r.gid == gid]

    def _take_file_fault(self, gid: str) -> _FileFault | None:
        for fault in self._file_faults:
            if fault.gid is not None and fault.gid != gid:
                continue
            fault.times -= 1
            if fault.times <= 0:
                self._file_faults.remove(fault)
            return fault
        return None

    async def _serve_file(self, request: web.Request) -> web.StreamResponse:
        at = time.monotonic()
        token = request.query.get("X-Amz-Signature", "")
        parts = request.path[len(FILES_PREFIX) :].split("/")
        asked_range = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        with self._lock:
            link = self._links.get(token)
            served = self._files.get(link.gid) if link is not None else None
            gid = link.gid if link is not None else (parts[1] if len(parts) > 1 else None)
            expired = link is not None and at - link.issued > link.expires_after
            fault = self._take_file_fault(gid) if served is not None and not expired else None

        def record(status: int | None, sent: int = 0) -> None:
            with self._lock:
                self._file_requests.append(
                    FileRequest(gid, asked_range, if_range, status, sent, expired, at)
                )

        if link is None or served is None or len(parts) != 3 or parts[1] != link.gid:
            record(403)
            return web.Response(
                status=403,
                text=EXPIRED_BODY.replace("Request has expired", "Access Denied"),
                content_type="application/xml",
            )
        if expired:
            record(403)
            return web.Response(status=403, text=EXPIRED_BODY, content_type="application/xml")
        if fault is not None and fault.status is not None:
            record(fault.status)
            return web.Response(status=fault.status, text="", content_type="application/xml")
        etag = (
            f'"{await asyncio.get_running_loop().run_in_executor(None, lambda: served.file.md5)}"'
        )
        size = served.file.size
        start, end = 0, size
        status = 200
        byte_range = _parse_range(asked_range, size)
        range_applies = byte_range is not None and not (fault is not None and fault.ignore_range)
        last_modified = "Sun, 29 Nov 2026 03:00:00 GMT"
        validators = (etag, last_modified) if served.etag else (last_modified,)
        if range_applies and if_range is not None and if_range not in validators:
            range_applies = False  # the file changed: the whole file, as RFC 9110 says
        if range_applies:
            assert byte_range is not None
            if byte_range == (-1, -1):
                record(416)
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
            start, end = byte_range
            status = 206
        headers = {
            "Content-Type": "application/gzip",
            "Content-Length": str(end - start),
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'attachment; filename="{served.filename}"',
            "Last-Modified": last_modified,
        }
        if served.etag:
            headers["ETag"] = etag
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        sent = 0
        limit = None
        if fault is not None:
            limit = fault.drop_after if fault.drop_after is not None else fault.stall_after
        try:
            for piece in served.file.read(start, end):
                if fault is not None and fault.corrupt_at is not None:
                    offset = start + sent
                    if offset <= fault.corrupt_at < offset + len(piece):
                        index = fault.corrupt_at - offset
                        piece = piece[:index] + bytes([piece[index] ^ 0xFF]) + piece[index + 1 :]
                if limit is not None and sent + len(piece) >= limit:
                    piece = piece[: limit - sent]
                    await response.write(piece)
                    sent += len(piece)
                    assert fault is not None
                    record(status, sent)
                    if fault.stall_after is not None and fault.drop_after is None:
                        await asyncio.sleep(fault.stall_seconds)  # the client gives up first
                    return await _hang_up(request)
                await response.write(piece)
                sent += len(piece)
        except ConnectionError:  # the client went away (it may: it asked for too much)
            record(status, sent)
            return response
        record(status, sent)
        await response.write_eof()
        return response

    # ---------------------------------------------------------------- faults

    def fail(
        self,
        status: int | None = None,
        *,
        gid: str | None = None,
        method: str | None = None,
        times: int = 1,
        retry_after: float | None = None,
        body: Any = None,
        phrase: str | None = None,
        delay: float = 0.0,
        reset: bool = False,
        malformed: bool = False,
        missing_data: bool = False,
        wrong_gid: str | None = None,
    ) -> None:
        """Queue a fault for the next `times` matching requests (gid/method None: any).

        Plain faults answer `status` (default 500) with Asana's error body (`body` overrides it:
        a dict is sent as JSON, str/bytes as they are). `reset` drops the connection without a
        response; `malformed` answers invalid JSON; `missing_data` a JSON body without "data";
        `wrong_gid` a valid representation whose gid is that value (those three answer 200, or
        `status` if given). `delay` is waited before answering. Faults are used in queue order.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append(
                _Fault(
                    status=status,
                    gid=gid,
                    method=method.upper() if method else None,
                    times=times,
                    retry_after=retry_after,
                    body=body,
                    phrase=phrase,
                    delay=delay,
                    reset=reset,
                    malformed=malformed,
                    missing_data=missing_data,
                    wrong_gid=wrong_gid,
                )
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending_faults(self) -> int:
        """How many fault answers are still queued."""
        with self._lock:
            return sum(f.times for f in self._faults)

    def set_delay(self, seconds: float, gid: str | None = None) -> None:
        """Delay every answer (for one gid, or all when None) by `seconds`; 0 removes it."""
        with self._lock:
            if seconds > 0:
                self._delays[gid] = seconds
            else:
                self._delays.pop(gid, None)

    def set_rate_limit(self, per_minute: int | None) -> None:
        """Answer 429 + Retry-After past `per_minute` requests in a sliding 60 s window.

        Like Asana, rejected requests count too. None removes the limit.
        """
        with self._lock:
            self._rate_limit = per_minute
            self._window.clear()

    # ---------------------------------------------------------------- recording

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, gid: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self._requests if r.gid == gid]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # ---------------------------------------------------------------- serving

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith(FILES_PREFIX) and request.method in ("GET", "HEAD"):
            return await self._serve_file(request)  # a presigned link: no Asana token
        at, wall = time.monotonic(), time.time()
        raw = await request.read()
        body = _parse_body(raw)
        gid, route = _route(request.method, request.path)
        query = {k: request.query[k] for k in request.query}
        peer = request.transport.get_extra_info("peername") if request.transport else None
        with self._lock:
            plan = self._plan(request, route, gid, query, body)
            self._requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.path,
                    gid=gid,
                    query=query,
                    headers={k.lower(): v for k, v in request.headers.items()},
                    body=body,
                    at=at,
                    wall=wall,
                    status=None if plan.reset else plan.status,
                    client_port=peer[1] if peer else None,
                )
            )
        if plan.delay > 0:
            await asyncio.sleep(plan.delay)
        if plan.reset:
            return await _reset(request)
        return _respond(plan, pretty=_truthy(query.get("opt_pretty")))

    def _plan(
        self,
        request: web.Request,
        route: str | None,
        gid: str | None,
        query: dict[str, str],
        body: Any,
    ) -> _Plan:
        """Decide the answer: auth, then queued faults, then the rate limit, then the API."""
        delay = self._delays.get(gid, self._delays.get(None, 0.0))
        if request.headers.get("Authorization") != f"Bearer {self._token}":
            return _Plan(401, error_body(DEFAULT_MESSAGES[401]), delay=delay)
        limited = self._count_and_check_rate(self._rate_clock())
        fault = self._take_fault(request.method, gid)
        if fault is not None:
            return self._fault_plan(fault, gid, query, delay)
        if limited is not None:
            return _Plan(
                429,
                error_body(DEFAULT_MESSAGES[429]),
                headers={"Retry-After": str(limited)},
                delay=delay,
            )
        if route is None:
            return _Plan(404, error_body("Not Found"), delay=delay)
        fields = _opt_fields(query)
        if route == "me":
            return _Plan(200, {"data": self._represent_me(fields)}, delay=delay)
        if route == "get":
            assert gid is not None
            export = self._exports.get(gid)
            if export is None:
                if not _GID_OK.match(gid):
                    msg = f"organization_export_gid: Not a valid global identifier: {gid}"
                    return _Plan(400, error_body(msg), delay=delay)
                msg = f"organization_export: Not a recognized ID: {gid}"
                return _Plan(404, error_body(msg), delay=delay)
            payload = {"data": self._represent(export, fields)}
            if export.script is not None and export.advance == "per_request":
                self._step(export)
            return _Plan(200, payload, delay=delay)
        # create
        if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
            return _Plan(400, error_body("data: Missing input"), delay=delay)
        organization = body["data"].get("organization")
        if not isinstance(organization, str) or not organization:
            return _Plan(400, error_body("organization: Missing input"), delay=delay)
        new_gid = str(next(self._gids))
        self.set_export(new_gid, "pending", organization_gid=organization)
        return _Plan(201, {"data": self._represent(self._exports[new_gid], fields)}, delay=delay)

    def _count_and_check_rate(self, at: float) -> int | None:
        """Count this request in the window; return Retry-After seconds if over the limit."""
        if self._rate_limit is None:
            return None
        while self._window and self._window[0] <= at - 60.0:
            self._window.popleft()
        over = len(self._window) >= self._rate_limit
        self._window.append(at)
        if not over:
            return None
        # Seconds until the oldest request in the window leaves it.
        oldest = self._window[0]
        return max(1, math.ceil(oldest + 60.0 - at))

    def _take_fault(self, method: str, gid: str | None) -> _Fault | None:
        for fault in self._faults:
            if fault.gid is not None and fault.gid != gid:
                continue
            if fault.method is not None and fault.method != method:
                continue
            fault.times -= 1
            if fault.times <= 0:
                self._faults.remove(fault)
            return fault
        return None

    def _fault_plan(
        self, fault: _Fault, gid: str | None, query: dict[str, str], delay: float
    ) -> _Plan:
        delay = max(delay, fault.delay)
        if fault.reset:
            return _Plan(None, delay=delay, reset=True)
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            ra = fault.retry_after
            headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
        if fault.malformed:
            return _Plan(fault.status or 200, b'{"data": {"gid": "', headers, delay)
        if fault.missing_data:
            return _Plan(fault.status or 200, {"result": "ok"}, headers, delay)
        if fault.wrong_gid is not None:
            export = self._exports.get(gid or "") or _Export(
                gid=fault.wrong_gid,
                state="pending",
                organization_gid=DEFAULT_ORGANIZATION_GID,
                organization_name="Acme Corp",
                created_at=_now_iso(),
                download_url=None,
                extra={},
            )
            data = self._represent(export, _opt_fields(query))
            data["gid"] = fault.wrong_gid
            return _Plan(fault.status or 200, {"data": data}, headers, delay)
        status = fault.status or 500
        if fault.body is not None:
            return _Plan(status, fault.body, headers, delay)
        phrase = fault.phrase
        if phrase is None and status == 500:
            phrase = _phrase(next(self._phrases))
        message = DEFAULT_MESSAGES.get(status, "Error")
        return _Plan(status, error_body(message, phrase=phrase), headers, delay)

    def _represent_me(self, fields: set[str] | None) -> dict[str, Any]:
        """The user as Asana shows it: everything, or gid/resource_type plus opt_fields."""
        me = copy.deepcopy(self._me)
        if fields is None:
            return me
        return {k: v for k, v in me.items() if k in ("gid", "resource_type") or k in fields}

    def _represent(self, export: _Export, fields: set[str] | None) -> dict[str, Any]:
        """The export as Asana shows it: everything, or gid/resource_type plus opt_fields."""
        url: str | None = None
        if export.state == "finished" and (fields is None or "download_url" in fields):
            if export.download_url is None:
                url = presigned_url(export.organization_gid or "0", export.gid)
            elif callable(export.download_url):
                url = export.download_url()
            else:
                url = export.download_url
            export.minted.append(url)
        organization: dict[str, Any] | None = None
        if export.organization_gid is not None:
            organization = {"gid": export.organization_gid, "resource_type": "workspace"}
            if fields is None or "organization.name" in fields:
                organization["name"] = export.organization_name
        full: dict[str, Any] = {
            "gid": export.gid,
            "resource_type": "organization_export",
            "created_at": export.created_at,
            "download_url": url,
            "state": export.state,
            "organization": organization,
        }
        if fields is not None:
            wanted = set(fields)
            if "organization.name" in wanted:
                wanted.add("organization")
            full = {k: v for k, v in full.items() if k in ("gid", "resource_type") or k in wanted}
        full.update(export.extra)
        return full


# -------------------------------------------------------------------- helpers


def _route(method: str, path: str) -> tuple[str | None, str | None]:
    """(gid, route) for the known operations; route None otherwise."""
    if path == f"{API_PREFIX}/users/me" and method == "GET":
        return None, "me"
    prefix = f"{API_PREFIX}/organization_exports"
    if path == prefix and method == "POST":
        return None, "create"
    if path.startswith(prefix + "/"):
        gid = path[len(prefix) + 1 :]
        if gid and "/" not in gid:
            return gid, "get" if method == "GET" else None
    return None, None


def _parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a single `bytes=` range; (-1, -1) when unsatisfiable; None when absent
    or not understood (then the whole file is served, as a server may)."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", (value or "").strip())
    if match is None or (not match[1] and not match[2]):
        return None
    if not match[1]:  # a suffix: the last N bytes
        return (max(0, size - int(match[2])), size) if int(match[2]) > 0 else (-1, -1)
    start = int(match[1])
    end = min(size, int(match[2]) + 1) if match[2] else size
    if start >= size or end <= start:
        return (-1, -1)
    return start, end


def _opt_fields(query: dict[str, str]) -> set[str] | None:
    raw = query.get("opt_fields")
    if raw is None:
        return None
    return {f.strip() for f in raw.split(",") if f.strip()}


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in ("false", "0", "no")


def _parse_body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _respond(plan: _Plan, *, pretty: bool) -> web.Response:
    assert plan.status is not None
    if isinstance(plan.payload, bytes | str):
        body = plan.payload.encode() if isinstance(plan.payload, str) else plan.payload
    else:
        body = json.dumps(plan.payload, indent=2 if pretty else None).encode()
    return web.Response(
        status=plan.status,
        body=body,
        headers=plan.headers,
        content_type="application/json",
        charset="utf-8",
    )


async def _reset(request: web.Request) -> web.StreamResponse:
    """Drop the connection with a TCP RST and no response at all."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    # The handler is cancelled when aiohttp notices the lost connection.
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")  # pragma: no cover


async def _hang_up(request: web.Request) -> web.StreamResponse:
    """Close the connection mid-body, after what was written reaches the client (a FIN, not a
    reset, which would throw away what the client has not read yet)."""
    transport = request.transport
    if transport is not None:
        transport.close()
    await asyncio.sleep(3600)  # cancelled when aiohttp notices the closed connection
    raise AssertionError("unreachable")  # pragma: no cover


# -------------------------------------------------------------------- fixtures


def fake_asana() -> Iterator[FakeAsana]:
    """Pytest fixture body: a started FakeAsana, stopped afterwards.

    Re-export from conftest with ``fake_asana = pytest.fixture(bot.demo.fake_asana.fake_asana)``.
    """
    server = FakeAsana()
    server.start()
    try:
        yield server
    finally:
        server.stop()
