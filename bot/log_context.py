"""Fields that every log line carries while they apply: replica, request id, team, channel,
user, export gid.

Code binds what it knows once (`with bind(gid=...)`), and the logging filter copies the fields
onto every record logged inside, so call sites need not repeat them. Fields live in a ContextVar:
asyncio tasks started inside a `bind` inherit them, and concurrent requests never see each
other's. The replica id is process-wide, set once at start-up.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

from slack_bolt import BoltResponse
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest

#: Field names in the order they are printed (text) or listed (JSON).
FIELDS = ("replica", "request_id", "team", "channel", "user", "gid")

_bound: ContextVar[Mapping[str, str]] = ContextVar(
    "asana_export_bot_log_fields", default=MappingProxyType({})
)
_process: dict[str, str] = {}


def set_replica(replica: str | None) -> None:
    """Name this process in every line from now on (None forgets it, for tests)."""
    if replica:
        _process["replica"] = replica
    else:
        _process.pop("replica", None)


@contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Add `fields` (None and empty values skipped) to every line logged inside the block."""
    extra = {k: str(v) for k, v in fields.items() if v is not None and v != ""}
    token = _bound.set({**_bound.get(), **extra})
    try:
        yield
    finally:
        _bound.reset(token)


def current() -> dict[str, str]:
    """The fields that apply here: the process's, then the bound ones, in FIELDS order first."""
    merged = {**_process, **_bound.get()}
    ordered = {k: merged[k] for k in FIELDS if k in merged}
    return ordered | {k: v for k, v in merged.items() if k not in ordered}


def request_id(headers: Mapping[str, Any] | None) -> str:
    """A short id for one Slack request: a hash of its timestamp and signature when it is
    signed (the same on every replica's and proxy's logs, and never the signature itself),
    else a random one (Socket Mode: Bolt does not expose the envelope id)."""
    headers = headers or {}
    if "x-slack-signature" not in headers or "x-slack-request-timestamp" not in headers:
        # (Bolt's headers are lowercased already: then they are used as they are.)
        headers = {str(k).lower(): v for k, v in headers.items()}

    def first(name: str) -> str:
        value = headers.get(name)
        if isinstance(value, list | tuple):
            value = value[0] if value else None
        return str(value) if value else ""

    timestamp, signature = first("x-slack-request-timestamp"), first("x-slack-signature")
    if timestamp and signature:
        return hashlib.sha256(f"{timestamp}:{signature}".encode()).hexdigest()[:12]
    return uuid.uuid4().hex[:12]


def bind_for_task(**fields: object) -> None:
    """Like `bind`, but until the current asyncio task ends: for code that cannot wrap what
    follows in a block (a Bolt middleware's listeners run after it returns)."""
    extra = {k: str(v) for k, v in fields.items() if v is not None and v != ""}
    _bound.set({**_bound.get(), **extra})


class BindRequestFields(AsyncMiddleware):
    """Bolt global middleware: bind the request id, team, channel and user for the rest of the
    request, so every line a Slack request causes names them.

    A class, not a function middleware: Bolt builds a function middleware's arguments by
    indexing the payload unguarded, which a malformed click crashes. Bolt runs the listeners
    after the middleware chain has returned, so a `with` block here would be over too early.
    The fields are set for the current task instead; that task is the request's own (aiohttp
    runs each request in a new task, and slack_sdk's Socket Mode client each message), so they
    end with the request.
    """

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],  # Bolt passes it by this name
    ) -> BoltResponse:
        context = req.context
        bind_for_task(
            request_id=request_id(req.headers),
            team=context.team_id,
            channel=context.channel_id,
            user=context.user_id,
        )
        return await next()
