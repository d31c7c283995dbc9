"""A fake Slack on 127.0.0.1: Web API, response_url and Socket Mode, recording every call.

It runs an aiohttp server in its own thread with its own event loop so that sync tests, async
tests and a bot subprocess can all use it at once. It answers like Slack on the wire: HTTP 200
with `{"ok": false, "error": ...}` for API errors, 429 with `Retry-After` for rate limits, the
Socket Mode `hello`/`disconnect` messages and envelopes acked by `envelope_id`.

Every public method is safe to call from any thread except the fake's own. Methods that wait
(`send_*`, `wait_for*`, `disconnect_all`) block the calling thread; async tests whose code under
test runs on their own loop must use the `async_*` variants instead, or they would block it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from aiohttp import WSCloseCode, WSMsgType, web
from multidict import CIMultiDict

from bot.demo.signing import (
    app_home_opened_event,
    block_actions_payload,
    event_callback,
    home_block_actions_payload,
    slash_command_form,
    view_submission_payload,
)

T = TypeVar("T")

#: Methods whose `blocks`, `attachments` and `metadata` form fields hold JSON strings.
_JSON_FIELDS = ("blocks", "attachments", "metadata", "view")

#: Slack's documented limits (https://docs.slack.dev/reference/block-kit/blocks).
MAX_BLOCKS = 50
#: A view (App Home tab or modal) holds up to 100 blocks.
MAX_VIEW_BLOCKS = 100
#: A modal's title, submit and close labels (plain_text).
MAX_MODAL_LABEL = 24
MAX_SECTION_TEXT = 3000
MAX_MESSAGE_TEXT = 40000
RESPONSE_URL_MAX_USES = 5
RESPONSE_URL_LIFETIME = 30 * 60.0

#: The bot scopes manifest.yml asks for: what auth.test reports in `x-oauth-scopes` by default.
DEFAULT_BOT_SCOPES = (
    "commands",
    "chat:write",
    "channels:history",
    "groups:history",
    "im:history",
    "mpim:history",
    "channels:read",
    "groups:read",
    "im:read",
    "mpim:read",
    "users:read",
)

_KNOWN_BLOCKS = {
    "actions",
    "context",
    "divider",
    "file",
    "header",
    "image",
    "input",
    "markdown",
    "rich_text",
    "section",
    "video",
}


@dataclass
class RecordedCall:
    """One Web API request as the fake received it; `status`/`response` are set once answered."""

    method: str
    headers: CIMultiDict[str]  # case-insensitive, like HTTP
    body: dict[str, Any]
    at: float
    wall: float
    status: int | None = None
    response: dict[str, Any] | None = None

    @property
    def token(self) -> str | None:
        """The bearer token sent (or the `token` form field)."""
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[len("Bearer ") :].strip()
        token = self.body.get("token")
        return token if isinstance(token, str) else None

    @property
    def ok(self) -> bool:
        """True when the fake answered `{"ok": true}`."""
        return bool(self.response and self.response.get("ok"))


@dataclass
class RecordedResponse:
    """One POST to a response_url (what Bolt's `respond()` sends)."""

    token: str
    body: Any
    headers: CIMultiDict[str]
    at: float
    wall: float
    status: int = 200
    answer: str = "ok"


@dataclass
class HeldCall:
    """A Web API call whose effect the fake applied (message stored) but whose answer it holds.

    This is the gap between "Slack accepted the post" and "the client knows it did": a client
    killed while its call is held has posted without ever learning the message ts.
    """

    call: RecordedCall
    #: The client's (host, port): which process sent the call.
    peer: tuple[str, int] | None
    held_at: float
    #: When the hold ended and the answer was written (to nobody if the client died meanwhile).
    released_at: float | None = None
    _release: asyncio.Event | None = field(default=None, repr=False)

    @property
    def holding(self) -> bool:
        """True while the answer is still held back."""
        return self.released_at is None


@dataclass
class SlackWarning:
    """A warning Slack would have put in a response (e.g. `missing_text_in_blocks`)."""

    method: str
    warning: str
    channel: str | None
    at: float


@dataclass
class SocketAck:
    """One envelope sent over Socket Mode and the client's ack to it."""

    envelope_id: str
    type: str
    connection_id: int
    envelope: dict[str, Any]
    sent_at: float
    acked_at: float | None = None
    payload: dict[str, Any] | None = None

    @property
    def latency(self) -> float | None:
        """Seconds from sending the envelope to receiving its ack."""
        return None if self.acked_at is None else self.acked_at - self.sent_at


@dataclass
class Channel:
    """A conversation as the fake knows it; flags mirror Slack's conversation object."""

    id: str
    name: str
    is_private: bool = False
    is_im: bool = False
    is_mpim: bool = False
    is_shared: bool = False
    is_ext_shared: bool = False
    is_org_shared: bool = False
    is_archived: bool = False
    is_member: bool = True
    #: Users in the conversation besides the bot (conversations.members adds the bot if a member).
    members: list[str] = field(default_factory=list)
    created: int = field(default_factory=lambda: int(time.time()))
    #: On Enterprise Grid: the workspace the channel was created in (None: the fake's team).
    team_id: str | None = None
    #: On Enterprise Grid: the other workspaces of the org it is shared with (is_org_shared).
    shared_with: tuple[str, ...] = ()

    def wire(self, team_id: str) -> dict[str, Any]:
        """The conversation object Slack returns from conversations.info."""
        grouped = self.is_im or self.is_mpim
        home = self.team_id or team_id
        return {
            "id": self.id,
            "name": self.name,
            "name_normalized": self.name,
            "is_channel": not self.is_private and not grouped,
            "is_group": self.is_private and not grouped,
            "is_im": self.is_im,
            "is_mpim": self.is_mpim,
            "is_private": self.is_private,
            "created": self.created,
            "is_archived": self.is_archived,
            "is_general": False,
            "unlinked": 0,
            "is_shared": self.is_shared,
            "is_ext_shared": self.is_ext_shared,
            "is_org_shared": self.is_org_shared,
            "is_pending_ext_shared": False,
            "is_member": self.is_member,
            "context_team_id": home,
            "shared_team_ids": [home, *self.shared_with],
            "topic": {"value": "", "creator": "", "last_set": 0},
            "purpose": {"value": "", "creator": "", "last_set": 0},
        }


@dataclass
class _Fault:
    kind: str  # "fail" | "ratelimit" | "server_error"
    method: str
    remaining: int | None  # None: until clear_faults()
    error: str = ""
    channel: str | None = None
    retry_after: int = 0
    status: int = 500
    html: bool = False


@dataclass
class _Reply:
    status: int
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    html: str | None = None  # sent instead of the JSON payload (a 5xx from a proxy)


@dataclass
class _Connection:
    id: int
    ws: web.WebSocketResponse
    ticket: str
    opened_at: float
    pending: dict[str, asyncio.Future[tuple[dict[str, Any] | None, float]]] = field(
        default_factory=dict
    )


class ApiError(Exception):
    """Raised inside a method handler to answer `{"ok": false, "error": ...}`."""

    def __init__(self, error: str, status: int = 200, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.extra = extra


def _ts_key(ts: Any) -> Decimal:
    try:
        return Decimal(str(ts))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes")


def validate_blocks(blocks: Any, *, max_blocks: int = MAX_BLOCKS) -> list[str]:
    """Slack's Block Kit checks that bite bots: counts, lengths, ids. Returns error messages.

    `max_blocks` is 50 for a message and 100 (MAX_VIEW_BLOCKS) for a view.
    """
    if not isinstance(blocks, list):
        return ["[ERROR] blocks must be an array [json-pointer:/blocks]"]
    errors: list[str] = []
    if len(blocks) > max_blocks:
        errors.append(f"[ERROR] no more than {max_blocks} items allowed [json-pointer:/blocks]")
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        ptr = f"/blocks/{i}"
        if not isinstance(block, dict) or block.get("type") not in _KNOWN_BLOCKS:
            errors.append(f"[ERROR] unsupported type [json-pointer:{ptr}/type]")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or len(block_id) > 255:
                errors.append(
                    f"[ERROR] must be less than 256 characters [json-pointer:{ptr}/block_id]"
                )
            elif block_id in block_ids:
                errors.append(f"[ERROR] duplicate block_id [json-pointer:{ptr}/block_id]")
            block_ids.add(str(block_id))
        errors.extend(_validate_block(block, ptr))
    return errors


def _text_errors(obj: Any, ptr: str, max_len: int, kinds: tuple[str, ...]) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in kinds:
        return [f"[ERROR] must be a text object of type {'/'.join(kinds)} [json-pointer:{ptr}]"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"[ERROR] must be more than 0 characters [json-pointer:{ptr}/text]"]
    if len(text) > max_len:
        return [f"[ERROR] must be less than {max_len + 1} characters [json-pointer:{ptr}/text]"]
    return []


def _validate_block(block: dict[str, Any], ptr: str) -> list[str]:
    kind = block["type"]
    errors: list[str] = []
    any_text = ("plain_text", "mrkdwn")
    if kind == "section":
        if "text" not in block and "fields" not in block:
            errors.append(f"[ERROR] must provide text or fields [json-pointer:{ptr}]")
        if "text" in block:
            errors += _text_errors(block["text"], f"{ptr}/text", MAX_SECTION_TEXT, any_text)
        fields = block.get("fields", [])
        if not isinstance(fields, list) or len(fields) > 10:
            errors.append(f"[ERROR] no more than 10 items allowed [json-pointer:{ptr}/fields]")
        else:
            for j, item in enumerate(fields):
                errors += _text_errors(item, f"{ptr}/fields/{j}", 2000, any_text)
        if "accessory" in block:
            errors += _validate_element(block["accessory"], f"{ptr}/accessory")
    elif kind == "header":
        errors += _text_errors(block.get("text"), f"{ptr}/text", 150, ("plain_text",))
    elif kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
            errors.append(f"[ERROR] must have 1 to 10 items [json-pointer:{ptr}/elements]")
        else:
            for j, el in enumerate(elements):
                if isinstance(el, dict) and el.get("type") == "image":
                    continue
                errors += _text_errors(el, f"{ptr}/elements/{j}", MAX_SECTION_TEXT, any_text)
    elif kind == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
            errors.append(f"[ERROR] must have 1 to 25 items [json-pointer:{ptr}/elements]")
        else:
            action_ids: set[str] = set()
            for j, el in enumerate(elements):
                errors += _validate_element(el, f"{ptr}/elements/{j}")
                aid = el.get("action_id") if isinstance(el, dict) else None
                if aid is not None and aid in action_ids:
                    errors.append(
                        f"[ERROR] duplicate action_id [json-pointer:{ptr}/elements/{j}/action_id]"
                    )
                action_ids.add(str(aid))
    return errors


def _validate_element(el: Any, ptr: str) -> list[str]:
    if not isinstance(el, dict) or not isinstance(el.get("type"), str):
        return [f"[ERROR] invalid element [json-pointer:{ptr}]"]
    errors: list[str] = []
    aid = el.get("action_id")
    if aid is not None and (not isinstance(aid, str) or len(aid) > 255):
        errors.append(f"[ERROR] must be less than 256 characters [json-pointer:{ptr}/action_id]")
    if el["type"] == "button":
        errors += _text_errors(el.get("text"), f"{ptr}/text", 75, ("plain_text",))
        value = el.get("value")
        if value is not None and (not isinstance(value, str) or len(value) > 2000):
            errors.append(f"[ERROR] must be less than 2001 characters [json-pointer:{ptr}/value]")
        url = el.get("url")
        if url is not None and (not isinstance(url, str) or len(url) > 3000):
            errors.append(f"[ERROR] must be less than 3001 characters [json-pointer:{ptr}/url]")
        if el.get("style") not in (None, "primary", "danger"):
            errors.append(f"[ERROR] must be primary or danger [json-pointer:{ptr}/style]")
    return errors


class FakeSlack:
    """Fake Slack Web API + response_url + Socket Mode server on a random 127.0.0.1 port."""

    def __init__(
        self,
        bot_token: str = "xoxb-test-bot-token",  # noqa: S107
        app_token: str = "xapp-test-app-token",  # noqa: S107
        team_id: str = "T0001",
        bot_user_id: str = "U0BOT",
        *,
        bot_id: str = "B0BOT",
        app_id: str = "A0001",
        team_domain: str = "example",
        team_name: str = "Example",
        enterprise_id: str | None = None,
        enterprise_name: str = "Example Org",
        org_wide: bool = False,
        auto_channels: bool = True,
        validate_blocks: bool = True,
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.team_domain = team_domain
        self.team_name = team_name
        #: The Enterprise org the workspace belongs to (auth.test's `enterprise_id`), if any.
        self.enterprise_id = enterprise_id
        self.enterprise_name = enterprise_name
        #: Installed org-wide on the Enterprise org (`is_enterprise_install`): one bot token for
        #: every workspace of the org that was granted the app (`add_workspace`).
        self.org_wide = org_wide
        if org_wide and not enterprise_id:
            raise ValueError("an org-wide install needs an enterprise_id")
        #: Workspaces of the Enterprise org the app was granted: team_id -> (domain, name).
        self._workspaces: dict[str, tuple[str, str]] = {team_id: (team_domain, team_name)}
        #: Each user's home workspace (users.info's `team_id`); others are in `team_id`.
        self._user_teams: dict[str, str] = {}
        self.auto_channels = auto_channels
        self.validate_blocks = validate_blocks

        self._lock = threading.RLock()
        self._calls: list[RecordedCall] = []
        self._channels: dict[str, Channel] = {}
        self._messages: dict[str, list[dict[str, Any]]] = {}
        self._ephemerals: list[dict[str, Any]] = []
        self._views: list[dict[str, Any]] = []
        self._modals: list[dict[str, Any]] = []
        self._warnings: list[SlackWarning] = []
        self._faults: list[_Fault] = []
        self._delays: dict[str, float] = {}
        self._holds: dict[str, float] = {}
        self._held: list[HeldCall] = []
        self._revoked = False
        self._last_ts_us = 0
        self._extra_methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        #: users.info's flags per user; a user not named here is a plain member.
        self._users: dict[str, dict[str, bool]] = {}

        self._response_urls: dict[str, dict[str, Any]] = {}
        self._responses: list[RecordedResponse] = []

        self._tickets: dict[str, int] = {}
        self._connections: dict[int, _Connection] = {}
        self._next_conn_id = 1
        self._round_robin = 0
        self._acks: list[SocketAck] = []
        self._socket_messages: list[tuple[int, Any]] = []
        self.connections_opened = 0
        #: True: apps.connections.open works but every websocket handshake gets a 503.
        self.refuse_sockets = False
        #: The bot token's granted scopes, sent as `x-oauth-scopes` on every answer to a call
        #: made with it, as Slack does (None: no header, as behind a proxy that strips it).
        self.scopes: tuple[str, ...] | None = DEFAULT_BOT_SCOPES

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeSlack:
        """Start the server thread and wait until it listens."""
        if self._thread is not None:
            raise RuntimeError("FakeSlack already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_server())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-slack", daemon=True)
        self._thread.start()
        if not ready.wait(10) or failure:
            raise RuntimeError(f"FakeSlack failed to start: {failure}")
        return self

    def stop(self) -> None:
        """Close websockets, stop the server and join its thread."""
        if self._thread is None or self._loop is None:
            return
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._stop_server(), self._loop).result(15)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _start_server(self) -> None:
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/response/{token}", self._handle_response_url)
        app.router.add_get("/socket", self._handle_socket)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._port = int(self._runner.addresses[0][1])

    async def _stop_server(self) -> None:
        self._release_held_on_loop()
        with self._lock:
            conns = list(self._connections.values())
        await asyncio.gather(
            *(c.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for c in conns)
        )
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def port(self) -> int:
        """The TCP port the fake listens on."""
        if self._port is None:
            raise RuntimeError("FakeSlack not started")
        return self._port

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:{port}`."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """What the bot gets as SLACK_API_URL (slack_sdk's `base_url`)."""
        return f"{self.base_url}/api/"

    # ------------------------------------------------------------------ running on the loop

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        loop = self._loop
        if loop is None or self._thread is None:
            coro.close()
            raise RuntimeError("FakeSlack not started")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("use the async_* methods from the fake's own loop")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    async def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` on the fake's loop from any other running loop."""
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("FakeSlack not started")
        if asyncio.get_running_loop() is loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    # ------------------------------------------------------------------ channels and messages

    def add_channel(
        self,
        channel_id: str,
        *,
        name: str | None = None,
        is_private: bool = False,
        is_im: bool = False,
        is_mpim: bool = False,
        is_shared: bool = False,
        is_ext_shared: bool = False,
        is_org_shared: bool = False,
        is_archived: bool = False,
        is_member: bool = True,
        members: Iterable[str] = (),
        team_id: str | None = None,
        shared_with: Iterable[str] = (),
    ) -> Channel:
        """Create (or replace) a conversation; keeps its messages. `members`: users besides us.

        On Enterprise Grid, `team_id` is the workspace it belongs to and `shared_with` the other
        workspaces of the org it is shared with (Slack then says is_shared and is_org_shared).
        """
        shared_with = tuple(shared_with)
        if shared_with:
            is_shared = is_org_shared = True
        channel = Channel(
            id=channel_id,
            name=name or channel_id.lower(),
            is_private=is_private,
            is_im=is_im,
            is_mpim=is_mpim,
            is_shared=is_shared,
            is_ext_shared=is_ext_shared,
            is_org_shared=is_org_shared,
            is_archived=is_archived,
            is_member=is_member,
            members=list(members),
            team_id=team_id,
            shared_with=shared_with,
        )
        with self._lock:
            self._channels[channel_id] = channel
            self._messages.setdefault(channel_id, [])
        return channel

    def update_channel(self, channel_id: str, **flags: Any) -> Channel:
        """Change flags of an existing channel mid-test (archive it, remove the bot...)."""
        with self._lock:
            channel = self._channels[channel_id]
            for key, value in flags.items():
                if not hasattr(channel, key):
                    raise AttributeError(key)
                setattr(channel, key, value)
            return copy.copy(channel)

    def set_user(
        self,
        user_id: str,
        *,
        is_admin: bool = False,
        is_owner: bool = False,
        is_primary_owner: bool = False,
        deleted: bool = False,
        team_id: str | None = None,
        is_org_admin: bool = False,
    ) -> None:
        """Name a workspace member's role, as users.info reports it (and, on Enterprise Grid,
        the workspace they belong to: `team_id`)."""
        with self._lock:
            if team_id is not None:
                self._user_teams[user_id] = team_id
            self._users[user_id] = {
                "is_admin": is_admin or is_owner,  # Slack: owners are admins too
                "is_owner": is_owner or is_primary_owner,
                "is_primary_owner": is_primary_owner,
                "deleted": deleted,
                "is_org_admin": is_org_admin,
            }

    # ------------------------------------------------------------------ Enterprise Grid

    def add_workspace(self, team_id: str, *, domain: str | None = None, name: str = "") -> None:
        """Grant an org-wide install one more workspace of the Enterprise org (auth.teams.list)."""
        with self._lock:
            self._workspaces[team_id] = (domain or team_id.lower(), name or team_id)

    @property
    def workspaces(self) -> list[str]:
        """The workspaces the bot is in: one, or every granted one of an org-wide install."""
        with self._lock:
            return list(self._workspaces)

    def user_team(self, user_id: str) -> str:
        """The workspace a user belongs to (set_user's `team_id`, else the fake's team)."""
        with self._lock:
            return self._user_teams.get(user_id, self.team_id)

    def _payload_team(self, fields: Mapping[str, Any]) -> tuple[str, str]:
        """The (team_id, domain) a payload comes from: given, else where it was typed or
        clicked: the channel's workspace (the user's own, in a channel their workspace shares),
        else the user's workspace if the app is in it, else the fake's."""
        user_team = self.user_team(str(fields.get("user_id") or "U0001"))
        with self._lock:
            channel = self._channels.get(str(fields.get("channel_id") or "C0001"))
            team_id = fields.get("team_id")
            if not team_id and channel is not None and channel.team_id:
                shared = (channel.team_id, *channel.shared_with)
                team_id = user_team if user_team in shared else channel.team_id
            team_id = team_id or (user_team if user_team in self._workspaces else self.team_id)
            domain = self._workspaces.get(team_id, (self.team_domain, ""))[0]
        return team_id, domain

    def channel(self, channel_id: str) -> Channel | None:
        """A copy of a known channel, or None."""
        with self._lock:
            found = self._channels.get(channel_id)
            return copy.copy(found) if found else None

    def add_message(
        self,
        channel_id: str,
        text: str,
        *,
        user: str = "U0001",
        blocks: list[dict[str, Any]] | None = None,
        metadata: dict[str, Any] | None = None,
        ts: str | None = None,
        bot: bool = False,
        thread_ts: str | None = None,
    ) -> dict[str, Any]:
        """Seed history with a message (by a human, or by the bot when `bot=True`), or a reply
        in the thread of `thread_ts`."""
        with self._lock:
            if channel_id not in self._channels:
                self.add_channel(channel_id)
            stored = self._store_message(
                channel_id,
                text=text,
                blocks=blocks,
                attachments=None,
                metadata=metadata,
                thread_ts=thread_ts,
                user=self.bot_user_id if bot else user,
                ts=ts,
            )
            return copy.deepcopy(stored)

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Stored messages (oldest first), including deleted ones (`deleted: True`)."""
        with self._lock:
            if channel is not None:
                found = self._messages.get(channel, [])
            else:
                found = [m for msgs in self._messages.values() for m in msgs]
                found.sort(key=lambda m: _ts_key(m["ts"]))
            return copy.deepcopy(found)

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        """One stored message, or None."""
        with self._lock:
            found = self._find_message(channel, ts)
            return copy.deepcopy(found) if found else None

    def wire_message(
        self, channel: str, ts: str, *, include_metadata: bool = True
    ) -> dict[str, Any]:
        """A stored message as Slack shows it to apps (e.g. inside a block_actions payload)."""
        with self._lock:
            found = self._find_message(channel, ts)
            if found is None:
                raise KeyError((channel, ts))
            return self._wire(found, include_metadata=include_metadata)

    @property
    def ephemerals(self) -> list[dict[str, Any]]:
        """Ephemeral messages posted with chat.postEphemeral."""
        with self._lock:
            return copy.deepcopy(self._ephemerals)

    @property
    def views(self) -> list[dict[str, Any]]:
        """Views published with views.publish (App Home): `user_id`, `view`, `id`; oldest first."""
        with self._lock:
            return copy.deepcopy(self._views)

    def home_of(self, user_id: str) -> dict[str, Any] | None:
        """The App Home view last published to `user_id` (with its `id`), or None."""
        with self._lock:
            mine = [v for v in self._views if v["user_id"] == user_id]
            return {**copy.deepcopy(mine[-1]["view"]), "id": mine[-1]["id"]} if mine else None

    @property
    def modals(self) -> list[dict[str, Any]]:
        """Modals opened with views.open: `trigger_id`, `view` (as Slack returned it), `id`."""
        with self._lock:
            return copy.deepcopy(self._modals)

    @property
    def warnings(self) -> list[SlackWarning]:
        """Warnings Slack would have returned, e.g. blocks sent without fallback `text`."""
        with self._lock:
            return list(self._warnings)

    def _find_message(self, channel: str, ts: str) -> dict[str, Any] | None:
        for msg in self._messages.get(channel, []):
            if msg["ts"] == ts:
                return msg
        return None

    def _next_ts(self) -> str:
        now_us = int(time.time() * 1_000_000)
        self._last_ts_us = max(self._last_ts_us + 1, now_us)
        return f"{self._last_ts_us // 1_000_000}.{self._last_ts_us % 1_000_000:06d}"

    def _store_message(
        self,
        channel_id: str,
        *,
        text: str | None,
        blocks: Any,
        attachments: Any,
        metadata: Any,
        thread_ts: str | None,
        user: str,
        ts: str | None = None,
        reply_broadcast: bool = False,
    ) -> dict[str, Any]:
        stored: dict[str, Any] = {
            "channel": channel_id,
            "ts": ts or self._next_ts(),
            "text": text or "",
            "blocks": blocks,
            "attachments": attachments,
            "metadata": metadata,
            "thread_ts": thread_ts,
            "reply_broadcast": reply_broadcast,
            "user": user,
            "bot_id": self.bot_id if user == self.bot_user_id else None,
            "posted_wall": time.time(),
            "deleted": False,
            "updates": [],
        }
        msgs = self._messages.setdefault(channel_id, [])
        msgs.append(stored)
        msgs.sort(key=lambda m: _ts_key(m["ts"]))
        return stored

    def _wire(self, msg: dict[str, Any], *, include_metadata: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "message",
            "user": msg["user"],
            "text": msg["text"],
            "ts": msg["ts"],
            "team": self.team_id,
        }
        if msg["bot_id"]:
            out["bot_id"] = msg["bot_id"]
            out["app_id"] = self.app_id
        if msg["blocks"] is not None:
            out["blocks"] = copy.deepcopy(msg["blocks"])
        if msg["attachments"] is not None:
            out["attachments"] = copy.deepcopy(msg["attachments"])
        if msg["thread_ts"]:
            out["thread_ts"] = msg["thread_ts"]
        if msg["updates"]:
            out["edited"] = {"user": msg["user"], "ts": msg["updates"][-1]["edit_ts"]}
        if include_metadata and msg["metadata"] is not None:
            out["metadata"] = copy.deepcopy(msg["metadata"])
        return out

    # ------------------------------------------------------------------ recorded calls

    @property
    def calls(self) -> list[RecordedCall]:
        """Every Web API request received, in arrival order."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[RecordedCall]:
        """Requests to one Web API method."""
        with self._lock:
            return [c for c in self._calls if c.method == method]

    def clear(self) -> None:
        """Forget recorded calls, responses, acks and warnings (channels and messages stay)."""
        with self._lock:
            self._calls.clear()
            self._responses.clear()
            self._acks.clear()
            self._warnings.clear()
            self._socket_messages.clear()

    def wait_for(
        self, predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02
    ) -> T:
        """Poll `predicate()` until it returns something truthy; return that or raise."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout}s")
            time.sleep(interval)

    async def async_wait_for(
        self,
        predicate: Callable[[], T],
        timeout: float = 10.0,  # noqa: ASYNC109
        interval: float = 0.02,
    ) -> T:
        """`wait_for` for async tests: sleeps on the caller's loop instead of blocking it."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout}s")
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ fault injection

    def fail(
        self, method: str, error: str, *, times: int | None = 1, channel: str | None = None
    ) -> None:
        """Answer the next `times` calls of `method` ("*" for any) with `{"ok": false, error}`."""
        self._add_fault(_Fault("fail", method, times, error=error, channel=channel))

    def rate_limit(self, method: str, retry_after: int, *, times: int | None = 1) -> None:
        """Answer the next `times` calls with HTTP 429, `Retry-After` and `ratelimited`."""
        self._add_fault(
            _Fault("ratelimit", method, times, error="ratelimited", retry_after=retry_after)
        )

    def server_error(
        self, method: str, status: int = 500, times: int | None = 1, *, html: bool = False
    ) -> None:
        """Answer the next `times` calls with an HTTP 5xx (JSON body, or HTML when `html`)."""
        self._add_fault(_Fault("server_error", method, times, status=status, html=html))

    def set_delay(self, method: str, seconds: float) -> None:
        """Delay every answer of `method` ("*": all; "response_url": response_url posts)."""
        with self._lock:
            if seconds <= 0:
                self._delays.pop(method, None)
            else:
                self._delays[method] = seconds

    def set_delay_after_store(self, method: str, seconds: float) -> None:
        """Apply `method` at once (store the message...), then hold its answer `seconds`.

        Only calls that succeed are held (a failed call stored nothing). `math.inf` holds the
        answer until `release_held()` or `stop()`; 0 or less ends holding new calls ("*": all
        methods). Calls already held stay held: see `held_calls()` and `release_held()`.
        Unlike `set_delay`, which waits before the call takes effect, this opens the gap in which
        a client can die after Slack accepted its post and before it learned the ts.
        """
        with self._lock:
            if seconds <= 0:
                self._holds.pop(method, None)
            else:
                self._holds[method] = seconds

    def held_calls(self, method: str | None = None) -> list[HeldCall]:
        """Calls held by `set_delay_after_store` (released ones too), oldest first."""
        with self._lock:
            return [h for h in self._held if method is None or h.call.method == method]

    def release_held(self, calls: Iterable[HeldCall] | None = None) -> int:
        """Answer the held `calls` (default: every call still held) now; returns how many."""
        loop = self._loop
        if loop is None or self._thread is None:
            return 0
        chosen = None if calls is None else list(calls)
        if threading.current_thread() is self._thread:
            return self._release_held_on_loop(chosen)
        future = asyncio.run_coroutine_threadsafe(self._async_release_held(chosen), loop)
        return future.result(10)

    async def _async_release_held(self, calls: list[HeldCall] | None) -> int:
        return self._release_held_on_loop(calls)

    def _release_held_on_loop(self, calls: list[HeldCall] | None = None) -> int:
        with self._lock:
            candidates = self._held if calls is None else calls
            holding = [h for h in candidates if h.holding and h._release is not None]
        for held in holding:
            assert held._release is not None
            held._release.set()
        return len(holding)

    async def _hold_after_store(
        self, method: str, call: RecordedCall, request: web.Request
    ) -> None:
        with self._lock:
            seconds = self._holds.get(method, self._holds.get("*", 0.0))
            if seconds <= 0:
                return
            transport = request.transport
            peer = transport.get_extra_info("peername") if transport is not None else None
            held = HeldCall(
                call,
                (str(peer[0]), int(peer[1])) if peer else None,
                time.monotonic(),
                _release=asyncio.Event(),
            )
            self._held.append(held)
        assert held._release is not None
        try:
            if math.isinf(seconds):
                await held._release.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(held._release.wait(), seconds)
        finally:
            held.released_at = time.monotonic()

    def revoke_token(self) -> None:
        """From now on every method answers `token_revoked` (the workspace uninstalled us)."""
        with self._lock:
            self._revoked = True

    def restore_token(self) -> None:
        """Undo `revoke_token`."""
        with self._lock:
            self._revoked = False

    def clear_faults(self) -> None:
        """Drop all pending faults, delays and holds (calls already held stay held)."""
        with self._lock:
            self._faults.clear()
            self._delays.clear()
            self._holds.clear()

    def register_method(
        self, method: str, handler: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> None:
        """Serve an extra Web API method; `handler(body)` returns the JSON (ok added if absent)."""
        with self._lock:
            self._extra_methods[method] = handler

    def _add_fault(self, fault: _Fault) -> None:
        if fault.remaining is not None and fault.remaining <= 0:
            raise ValueError("times must be positive (or None for always)")
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, method: str, body: Mapping[str, Any]) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method not in (method, "*"):
                    continue
                if fault.channel is not None and body.get("channel") != fault.channel:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    # ------------------------------------------------------------------ Web API transport

    async def _parse_request(self, request: web.Request) -> tuple[dict[str, Any], bool]:
        params: dict[str, Any] = dict(request.query)
        raw = await request.read()
        is_json = request.content_type == "application/json"
        if raw:
            if is_json:
                try:
                    parsed = json.loads(raw)
                except ValueError as exc:
                    raise ApiError("invalid_json") from exc
                if not isinstance(parsed, dict):
                    raise ApiError("invalid_json")
                params.update(parsed)
            else:
                params.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        for key in _JSON_FIELDS:
            value = params.get(key)
            if isinstance(value, str):
                # Unparseable stays a string: the method answers *_format errors.
                with contextlib.suppress(ValueError):
                    params[key] = json.loads(value)
        return params, is_json

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        at, wall = time.monotonic(), time.time()
        try:
            body, is_json = await self._parse_request(request)
        except ApiError as exc:
            body, is_json = {}, True
            parse_error: ApiError | None = exc
        else:
            parse_error = None
        call = RecordedCall(method, CIMultiDict(request.headers), body, at, wall)
        with self._lock:
            self._calls.append(call)
            delay = self._delays.get(method, self._delays.get("*", 0.0))
        if delay:
            await asyncio.sleep(delay)

        if parse_error is not None:
            reply = _Reply(200, {"ok": False, "error": parse_error.error})
        else:
            reply = self._answer(method, body, call, is_json)
        call.status, call.response = reply.status, reply.payload
        if reply.status == 200 and reply.payload.get("ok"):
            await self._hold_after_store(method, call, request)
        if reply.html is not None:
            return web.Response(status=reply.status, text=reply.html, content_type="text/html")
        headers = {**reply.headers, **self._scope_headers(call, reply)}
        return web.json_response(reply.payload, status=reply.status, headers=headers)

    def _scope_headers(self, call: RecordedCall, reply: _Reply) -> dict[str, str]:
        """`x-oauth-scopes` for a call the bot token was accepted on (not on auth errors)."""
        refused = reply.payload.get("error") in ("not_authed", "invalid_auth", "token_revoked")
        with self._lock:
            scopes, revoked = self.scopes, self._revoked
        if scopes is None or revoked or refused or call.token != self.bot_token:
            return {}
        return {"x-oauth-scopes": ",".join(scopes)}

    def _answer(
        self, method: str, body: dict[str, Any], call: RecordedCall, is_json: bool
    ) -> _Reply:
        handler = self._handlers().get(method)
        extra = self._extra_methods.get(method)
        if handler is None and extra is None:
            return _Reply(200, {"ok": False, "error": "unknown_method", "req_method": method})
        fault = self._take_fault(method, body)
        if fault is not None:
            if fault.kind == "ratelimit":
                headers = {"Retry-After": str(fault.retry_after)}
                return _Reply(429, {"ok": False, "error": "ratelimited"}, headers)
            if fault.kind == "server_error":
                payload = {"ok": False, "error": "internal_error"}
                html = f"<html><body><h1>{fault.status} Server Error</h1></body></html>"
                return _Reply(fault.status, payload, html=html if fault.html else None)
            return _Reply(200, {"ok": False, "error": fault.error})
        try:
            self._authorize(method, call, is_json)
            with self._lock:
                if extra is not None:
                    payload = dict(extra(body))
                    payload.setdefault("ok", True)
                    return _Reply(200, payload)
                assert handler is not None
                return _Reply(200, {"ok": True, **handler(body)})
        except ApiError as exc:
            return _Reply(exc.status, {"ok": False, "error": exc.error, **exc.extra})

    def _authorize(self, method: str, call: RecordedCall, is_json: bool) -> None:
        token = call.token
        auth_header = call.headers.get("Authorization", "")
        if is_json and not auth_header.startswith("Bearer "):
            token = None  # Slack reads no token from JSON bodies
        if not token:
            raise ApiError("not_authed")
        known = (self.bot_token, self.app_token)
        if token not in known:
            raise ApiError("invalid_auth")
        if self._revoked:
            raise ApiError("token_revoked")
        wants_app = method == "apps.connections.open"
        if (token == self.app_token) != wants_app:
            raise ApiError("not_allowed_token_type")

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "auth.test": self._m_auth_test,
            "auth.teams.list": self._m_auth_teams_list,
            "chat.postMessage": self._m_post_message,
            "chat.update": self._m_update,
            "chat.postEphemeral": self._m_post_ephemeral,
            "chat.delete": self._m_delete,
            "conversations.info": self._m_conversations_info,
            "conversations.history": self._m_conversations_history,
            "conversations.replies": self._m_conversations_replies,
            "conversations.members": self._m_conversations_members,
            "apps.connections.open": self._m_connections_open,
            "views.publish": self._m_views_publish,
            "views.open": self._m_views_open,
            "users.info": self._m_users_info,
        }

    # ------------------------------------------------------------------ Web API methods

    def _channel_for(self, body: Mapping[str, Any], *, create: bool | None = None) -> Channel:
        channel_id = body.get("channel")
        if not isinstance(channel_id, str) or not channel_id:
            raise ApiError("channel_not_found")
        channel = self._channels.get(channel_id)
        if channel is None:
            if not (self.auto_channels if create is None else create):
                raise ApiError("channel_not_found")
            channel = self.add_channel(channel_id)
        if channel.is_private and not channel.is_member:
            raise ApiError("channel_not_found")  # Slack hides private channels we are not in
        return channel

    def _check_content(self, method: str, body: Mapping[str, Any], channel: str) -> list[str]:
        """Validate text/blocks/metadata like Slack; returns warnings to send back."""
        text = body.get("text")
        blocks = body.get("blocks")
        if text is not None and not isinstance(text, str):
            text = str(text)
        if text is not None and len(text) > MAX_MESSAGE_TEXT:
            raise ApiError("msg_too_long")
        if blocks is not None:
            if isinstance(blocks, str):
                raise ApiError("invalid_blocks_format")
            if self.validate_blocks:
                errors = validate_blocks(blocks)
                if errors:
                    raise ApiError(
                        "invalid_blocks", errors=errors, response_metadata={"messages": errors}
                    )
        metadata = body.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict)
            and isinstance(metadata.get("event_type"), str)
            and isinstance(metadata.get("event_payload"), dict)
        ):
            raise ApiError("invalid_metadata_format")
        warnings: list[str] = []
        if blocks and not text:
            warnings.append("missing_text_in_blocks")
            self._warnings.append(
                SlackWarning(method, "missing_text_in_blocks", channel, time.monotonic())
            )
        return warnings

    @staticmethod
    def _with_warnings(payload: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
        if warnings:
            payload["warning"] = ",".join(warnings)
            payload["response_metadata"] = {"warnings": warnings}
        return payload

    def _m_auth_test(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.org_wide:
            # An org-wide token belongs to the org, not to one of its workspaces.
            return {
                "url": f"https://{self.team_domain}.enterprise.slack.com/",
                "team": self.enterprise_name,
                "user": "asana-export-bot",
                "team_id": self.enterprise_id,
                "user_id": self.bot_user_id,
                "bot_id": self.bot_id,
                "enterprise_id": self.enterprise_id,
                "is_enterprise_install": True,
            }
        answer: dict[str, Any] = {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_name,
            "user": "asana-export-bot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }
        if self.enterprise_id:  # a workspace of an Enterprise org names the org
            answer["enterprise_id"] = self.enterprise_id
        return answer

    def _m_auth_teams_list(self, body: dict[str, Any]) -> dict[str, Any]:
        """The workspaces the token may act in (all granted ones for an org-wide install)."""
        with self._lock:
            teams = [{"id": t, "name": name or t} for t, (_, name) in self._workspaces.items()]
        if not self.org_wide:
            teams = teams[:1]
        return {"teams": teams, "response_metadata": {"next_cursor": ""}}

    def _m_post_message(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_for(body)
        if channel.is_archived:
            raise ApiError("is_archived")
        if not channel.is_member:
            raise ApiError("not_in_channel")
        if not body.get("text") and not body.get("blocks") and not body.get("attachments"):
            raise ApiError("no_text")
        warnings = self._check_content("chat.postMessage", body, channel.id)
        thread_ts = body.get("thread_ts") or None
        stored = self._store_message(
            channel.id,
            text=body.get("text"),
            blocks=body.get("blocks"),
            attachments=body.get("attachments"),
            metadata=body.get("metadata"),
            thread_ts=str(thread_ts) if thread_ts else None,
            user=self.bot_user_id,
            reply_broadcast=_truthy(body.get("reply_broadcast", False)),
        )
        payload = {
            "channel": channel.id,
            "ts": stored["ts"],
            "message": self._wire(stored, include_metadata=True),
        }
        return self._with_warnings(payload, warnings)

    def _m_update(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_for(body)
        ts = body.get("ts")
        stored = self._find_message(channel.id, str(ts)) if ts else None
        if stored is None or stored["deleted"]:
            raise ApiError("message_not_found")
        if channel.is_archived:
            raise ApiError("is_archived")
        if stored["user"] != self.bot_user_id:
            raise ApiError("cant_update_message")
        warnings = self._check_content("chat.update", body, channel.id)
        for key in ("text", "blocks", "attachments", "metadata"):
            if key in body:
                stored[key] = body[key] if key != "text" else (body[key] or "")
        stored["updates"].append(
            {
                "text": stored["text"],
                "blocks": copy.deepcopy(stored["blocks"]),
                "attachments": copy.deepcopy(stored["attachments"]),
                "metadata": copy.deepcopy(stored["metadata"]),
                "edit_ts": self._next_ts(),
                "wall": time.time(),
            }
        )
        payload = {
            "channel": channel.id,
            "ts": stored["ts"],
            "text": stored["text"],
            "message": self._wire(stored, include_metadata=True),
        }
        return self._with_warnings(payload, warnings)

    def _m_post_ephemeral(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_for(body)
        if channel.is_archived:
            raise ApiError("is_archived")
        if not channel.is_member:
            raise ApiError("not_in_channel")
        if not body.get("user"):
            raise ApiError("user_not_in_channel")
        if not body.get("text") and not body.get("blocks") and not body.get("attachments"):
            raise ApiError("no_text")
        self._check_content("chat.postEphemeral", body, channel.id)
        ts = self._next_ts()
        self._ephemerals.append(
            {
                "channel": channel.id,
                "user": body["user"],
                "ts": ts,
                "text": body.get("text") or "",
                "blocks": body.get("blocks"),
                "thread_ts": body.get("thread_ts"),
            }
        )
        return {"message_ts": ts}

    def _m_delete(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_for(body)
        ts = body.get("ts")
        stored = self._find_message(channel.id, str(ts)) if ts else None
        if stored is None or stored["deleted"]:
            raise ApiError("message_not_found")
        if stored["user"] != self.bot_user_id:
            raise ApiError("cant_delete_message")
        stored["deleted"] = True
        return {"channel": channel.id, "ts": stored["ts"]}

    def _m_users_info(self, body: dict[str, Any]) -> dict[str, Any]:
        """A member's profile with Slack's role flags (needs users:read, as Slack's does)."""
        if self.scopes is not None and "users:read" not in self.scopes:
            raise ApiError("missing_scope", needed="users:read", provided=",".join(self.scopes))
        user_id = body.get("user")
        if not isinstance(user_id, str) or not user_id:
            raise ApiError("user_not_found")
        flags = dict(
            self._users.get(user_id)
            or {
                "is_admin": False,
                "is_owner": False,
                "is_primary_owner": False,
                "deleted": False,
                "is_org_admin": False,
            }
        )
        org_admin = bool(flags.pop("is_org_admin", False))
        user: dict[str, Any] = {
            "id": user_id,
            "team_id": self.user_team(user_id),
            "name": user_id.lower(),
            "is_bot": False,
            **flags,
        }
        if self.enterprise_id:  # a member of an Enterprise org, as Slack describes one
            user["enterprise_user"] = {
                "id": user_id,
                "enterprise_id": self.enterprise_id,
                "enterprise_name": self.enterprise_name,
                "is_admin": org_admin,
                "is_owner": False,
                "is_primary_owner": False,
                "teams": [self.user_team(user_id)],
            }
        return {"user": user}

    def _m_conversations_info(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_for(body)
        return {"channel": channel.wire(self.team_id)}

    def _m_conversations_members(self, body: dict[str, Any]) -> dict[str, Any]:
        """User IDs in a conversation, paged by cursor (`limit` 1..1000, default 100)."""
        channel = self._channel_for(body, create=False)
        try:
            limit = int(body.get("limit") or 100)
            offset = int(body.get("cursor") or 0)
        except ValueError as exc:
            raise ApiError("invalid_cursor") from exc
        limit = max(1, min(limit, 1000))
        everyone = list(channel.members)
        if channel.is_member and self.bot_user_id not in everyone:
            everyone.append(self.bot_user_id)
        page = everyone[offset : offset + limit]
        more = offset + limit < len(everyone)
        return {
            "members": page,
            "response_metadata": {"next_cursor": str(offset + limit) if more else ""},
        }

    def _m_conversations_history(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_for(body)
        if not channel.is_member:
            raise ApiError("not_in_channel")
        try:
            limit = int(body.get("limit") or 100)
            offset = int(body.get("cursor") or 0)
        except ValueError as exc:
            raise ApiError("invalid_arguments") from exc
        limit = max(1, min(limit, 999))
        inclusive = _truthy(body.get("inclusive", False))
        oldest = _ts_key(body.get("oldest") or 0)
        latest = _ts_key(body["latest"]) if body.get("latest") else None
        with_metadata = _truthy(body.get("include_all_metadata", False))

        def in_range(msg: dict[str, Any]) -> bool:
            key = _ts_key(msg["ts"])
            if key < oldest or (key == oldest and not inclusive):
                return False
            return latest is None or key < latest or (key == latest and inclusive)

        visible = [
            m
            for m in self._messages.get(channel.id, [])
            if not m["deleted"]
            and (not m["thread_ts"] or m["thread_ts"] == m["ts"] or m["reply_broadcast"])
            and in_range(m)
        ]
        visible.sort(key=lambda m: _ts_key(m["ts"]), reverse=True)
        page = visible[offset : offset + limit]
        has_more = offset + limit < len(visible)
        return {
            "messages": [self._wire(m, include_metadata=with_metadata) for m in page],
            "has_more": has_more,
            "pin_count": 0,
            "channel_actions_ts": None,
            "channel_actions_count": 0,
            "response_metadata": {"next_cursor": str(offset + limit) if has_more else ""},
        }

    def _m_conversations_replies(self, body: dict[str, Any]) -> dict[str, Any]:
        """A thread: its parent first, then the replies oldest first (Slack's order)."""
        channel = self._channel_for(body)
        if not channel.is_member:
            raise ApiError("not_in_channel")
        parent = self._find_message(channel.id, str(body.get("ts") or ""))
        if parent is None or parent["deleted"]:
            raise ApiError("thread_not_found")
        try:
            limit = max(1, min(int(body.get("limit") or 100), 999))
            offset = int(body.get("cursor") or 0)
        except ValueError as exc:
            raise ApiError("invalid_arguments") from exc
        with_metadata = _truthy(body.get("include_all_metadata", False))
        thread = [parent] + [
            m
            for m in self._messages.get(channel.id, [])
            if not m["deleted"] and m["thread_ts"] == parent["ts"] and m["ts"] != parent["ts"]
        ]
        page = thread[offset : offset + limit]
        has_more = offset + limit < len(thread)
        return {
            "messages": [self._wire(m, include_metadata=with_metadata) for m in page],
            "has_more": has_more,
            "response_metadata": {"next_cursor": str(offset + limit) if has_more else ""},
        }

    def _m_connections_open(self, body: dict[str, Any]) -> dict[str, Any]:
        ticket = uuid.uuid4().hex
        self._tickets[ticket] = 0
        return {"url": f"ws://127.0.0.1:{self.port}/socket?ticket={ticket}&app_id={self.app_id}"}

    def _check_view(self, view: Any, kind: str) -> None:
        """A view's type and blocks, as views.publish / views.open check them (100 blocks)."""
        if not isinstance(view, dict) or view.get("type") != kind:
            raise ApiError("invalid_arguments")
        if self.validate_blocks:
            errors = validate_blocks(view.get("blocks", []), max_blocks=MAX_VIEW_BLOCKS)
            if kind == "modal":
                for key in ("title", "submit", "close"):
                    if key in view or key == "title":
                        errors += _text_errors(
                            view.get(key), f"/view/{key}", MAX_MODAL_LABEL, ("plain_text",)
                        )
            if errors:
                raise ApiError("invalid_blocks", response_metadata={"messages": errors})

    def _m_views_publish(self, body: dict[str, Any]) -> dict[str, Any]:
        view = body.get("view")
        self._check_view(view, "home")
        if not body.get("user_id"):
            raise ApiError("invalid_arguments")
        view_id = "V" + uuid.uuid4().hex[:10].upper()
        self._views.append({"user_id": body["user_id"], "view": view, "id": view_id})
        return {"view": {"id": view_id, "team_id": self.team_id, **view}}

    def _m_views_open(self, body: dict[str, Any]) -> dict[str, Any]:
        """Open a modal; a trigger_id is needed (Slack's expire after 3 s; this fake's do not)."""
        if not body.get("trigger_id"):
            raise ApiError("invalid_trigger_id")
        view = body.get("view")
        self._check_view(view, "modal")
        assert isinstance(view, dict)
        view_id = "V" + uuid.uuid4().hex[:10].upper()
        opened = {
            "id": view_id,
            "team_id": self.team_id,
            "app_id": self.app_id,
            "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}",
            **view,
        }
        self._modals.append({"trigger_id": body["trigger_id"], "view": opened, "id": view_id})
        return {"view": copy.deepcopy(opened)}

    # ------------------------------------------------------------------ response_url

    def new_response_url(self) -> str:
        """Issue a response_url like the one in a slash command or interactive payload."""
        token = uuid.uuid4().hex
        with self._lock:
            self._response_urls[token] = {
                "issued": time.monotonic(),
                "uses": 0,
                "expired": False,
            }
        return f"{self.base_url}/response/{token}"

    def expire_response_url(self, url_or_token: str) -> None:
        """Make a response_url answer 404 `expired_url` as after 30 minutes."""
        token = url_or_token.rstrip("/").rsplit("/", 1)[-1]
        with self._lock:
            self._response_urls[token]["expired"] = True

    def responses(self, token: str | None = None) -> list[RecordedResponse]:
        """Posts received on response_urls (one token, or a full URL, or all)."""
        if token is not None:
            token = token.rstrip("/").rsplit("/", 1)[-1]
        with self._lock:
            return [r for r in self._responses if token is None or r.token == token]

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        at, wall = time.monotonic(), time.time()
        raw = await request.read()
        with self._lock:
            delay = self._delays.get("response_url", 0.0)
        if delay:
            await asyncio.sleep(delay)
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        status, answer = self._answer_response_url(token, body, at)
        with self._lock:
            self._responses.append(
                RecordedResponse(
                    token, body, CIMultiDict(request.headers), at, wall, status, answer
                )
            )
        return web.Response(status=status, text=answer, content_type="text/html")

    def _answer_response_url(self, token: str, body: Any, at: float) -> tuple[int, str]:
        with self._lock:
            entry = self._response_urls.get(token)
            if entry is None:
                return 404, "no_service"
            if entry["expired"] or at - entry["issued"] > RESPONSE_URL_LIFETIME:
                return 404, "expired_url"
            if entry["uses"] >= RESPONSE_URL_MAX_USES:
                return 404, "used_url"
            if not isinstance(body, dict):
                return 400, "invalid_payload"
            text = body.get("text")
            if isinstance(text, str) and len(text) > MAX_MESSAGE_TEXT:
                return 400, "msg_too_long"
            blocks = body.get("blocks")
            if blocks is not None and self.validate_blocks and validate_blocks(blocks):
                return 400, "invalid_blocks"
            if not text and not blocks and not body.get("delete_original"):
                return 400, "no_text"
            if blocks and not text:
                self._warnings.append(
                    SlackWarning("response_url", "missing_text_in_blocks", None, at)
                )
            entry["uses"] += 1
            return 200, "ok"

    # ------------------------------------------------------------------ Socket Mode

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if self.refuse_sockets:
            return web.Response(status=503, text="socket mode is down")
        with self._lock:
            if ticket not in self._tickets:
                return web.Response(status=401, text="invalid_ticket")
            self._tickets[ticket] += 1
        ws = web.WebSocketResponse(autoping=True, timeout=2.0)
        await ws.prepare(request)
        with self._lock:
            conn = _Connection(self._next_conn_id, ws, ticket, time.monotonic())
            self._next_conn_id += 1
            self._connections[conn.id] = conn
            self.connections_opened += 1
            count = len(self._connections)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": count,
                "debug_info": {
                    "host": f"fake-applink-{conn.id}",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": self.app_id},
            }
        )
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_socket_text(conn, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            with self._lock:
                self._connections.pop(conn.id, None)
            for fut in conn.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("socket closed before the ack"))
        return ws

    def _on_socket_text(self, conn: _Connection, data: str) -> None:
        received = time.monotonic()
        try:
            message = json.loads(data)
        except ValueError:
            message = data
        with self._lock:
            self._socket_messages.append((conn.id, message))
        if not isinstance(message, dict):
            return
        fut = conn.pending.pop(str(message.get("envelope_id")), None)
        if fut is not None and not fut.done():
            fut.set_result((message.get("payload"), received))

    def socket_connections_count(self) -> int:
        """Open Socket Mode websocket connections."""
        with self._lock:
            return len(self._connections)

    @property
    def socket_acks(self) -> list[SocketAck]:
        """Envelopes sent and their acks (acked_at None when none came)."""
        with self._lock:
            return list(self._acks)

    @property
    def socket_messages(self) -> list[tuple[int, Any]]:
        """Every text message clients sent over Socket Mode: (connection id, parsed JSON)."""
        with self._lock:
            return list(self._socket_messages)

    async def _wait_connection(self, deadline: float, connection_id: int | None) -> _Connection:
        while True:
            with self._lock:
                open_conns = [
                    c
                    for c in sorted(self._connections.values(), key=lambda c: c.id)
                    if not c.ws.closed
                ]
                if connection_id is not None:
                    open_conns = [c for c in open_conns if c.id == connection_id]
                if open_conns:
                    conn = open_conns[self._round_robin % len(open_conns)]
                    self._round_robin += 1
                    return conn
            if time.monotonic() >= deadline:
                raise TimeoutError("no open Socket Mode connection")
            await asyncio.sleep(0.01)

    async def _send_envelope(
        self,
        type_: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool,
        timeout: float,  # noqa: ASYNC109
        connection_id: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> SocketAck:
        deadline = time.monotonic() + timeout
        conn = await self._wait_connection(deadline, connection_id)
        envelope_id = str(uuid.uuid4())
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": type_,
            "accepts_response_payload": accepts_response_payload,
            **(extra or {}),
        }
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[dict[str, Any] | None, float]] = loop.create_future()
        conn.pending[envelope_id] = fut
        record = SocketAck(envelope_id, type_, conn.id, envelope, time.monotonic())
        with self._lock:
            self._acks.append(record)
        await conn.ws.send_str(json.dumps(envelope))
        try:
            ack_payload, acked_at = await asyncio.wait_for(
                fut, max(0.0, deadline - time.monotonic())
            )
        except TimeoutError:
            conn.pending.pop(envelope_id, None)
            raise TimeoutError(f"no ack for {type_} envelope {envelope_id} in {timeout}s") from None
        record.acked_at = acked_at
        record.payload = ack_payload if isinstance(ack_payload, dict) else {}
        return record

    def slash_command_payload(self, **fields: Any) -> dict[str, str]:
        """Slack's slash command fields, with a fresh response_url of this fake by default."""
        fields.setdefault("response_url", self.new_response_url())
        team_id, domain = self._payload_team(fields)
        fields.setdefault("team_id", team_id)
        fields.setdefault("team_domain", domain)
        fields.setdefault("api_app_id", self.app_id)
        fields.setdefault("text", "")
        if self.enterprise_id:  # a workspace of an Enterprise org: Slack names the org
            fields.setdefault("enterprise_id", self.enterprise_id)
            fields.setdefault("enterprise_name", self.enterprise_name)
        if self.org_wide:
            fields.setdefault("is_enterprise_install", "true")
        return slash_command_form(**fields)

    async def async_send_envelope(
        self,
        type_: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool = False,
        timeout: float = 5.0,  # noqa: ASYNC109
        connection_id: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> SocketAck:
        """Hand one envelope to one open connection (waiting for one) and await its ack."""
        return await self._on_loop(
            self._send_envelope(
                type_,
                payload,
                accepts_response_payload=accepts_response_payload,
                timeout=timeout,
                connection_id=connection_id,
                extra=extra,
            )
        )

    def send_envelope(
        self,
        type_: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool = False,
        timeout: float = 5.0,
        connection_id: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> SocketAck:
        """Sync `async_send_envelope`."""
        coro = self._send_envelope(
            type_,
            payload,
            accepts_response_payload=accepts_response_payload,
            timeout=timeout,
            connection_id=connection_id,
            extra=extra,
        )
        return self._run(coro, timeout + 5)

    async def async_send_slash_command(
        self,
        timeout: float = 5.0,  # noqa: ASYNC109
        **fields: Any,
    ) -> dict[str, Any]:
        """Send a `slash_commands` envelope; returns the ack payload ({} for a bare ack)."""
        ack = await self.async_send_envelope(
            "slash_commands",
            self.slash_command_payload(**fields),
            accepts_response_payload=True,
            timeout=timeout,
        )
        return ack.payload or {}

    def send_slash_command(self, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        """Sync `async_send_slash_command`; latency is in `socket_acks[-1].latency`."""
        ack = self.send_envelope(
            "slash_commands",
            self.slash_command_payload(**fields),
            accepts_response_payload=True,
            timeout=timeout,
        )
        return ack.payload or {}

    def block_actions_payload(self, **fields: Any) -> dict[str, Any]:
        """A button-click payload with this fake's team/app and a fresh response_url."""
        fields.setdefault("response_url", self.new_response_url())
        team_id, domain = self._payload_team(fields)
        fields.setdefault("team_id", team_id)
        fields.setdefault("team_domain", domain)
        fields.setdefault("api_app_id", self.app_id)
        if self.enterprise_id:
            fields.setdefault("enterprise_id", self.enterprise_id)
        if self.org_wide:
            fields.setdefault("is_enterprise_install", True)
        return block_actions_payload(**fields)

    def home_click_payload(self, user_id: str, **fields: Any) -> dict[str, Any]:
        """A click in `user_id`'s App Home tab, on the view last published to them (if any)."""
        fields.setdefault("team_id", self.team_id)
        fields.setdefault("team_domain", self.team_domain)
        fields.setdefault("api_app_id", self.app_id)
        fields.setdefault("view", self.home_of(user_id))
        return home_block_actions_payload(user_id=user_id, **fields)

    def view_submission_payload(
        self,
        values: Mapping[str, Mapping[str, Any]],
        *,
        user_id: str,
        view: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Submitting a modal (by default the last one opened) with these input `values`."""
        if view is None:
            opened = self.modals
            if not opened:
                raise AssertionError("no modal was opened")
            view = opened[-1]["view"]
        fields.setdefault("team_id", self.team_id)
        fields.setdefault("team_domain", self.team_domain)
        fields.setdefault("api_app_id", self.app_id)
        return view_submission_payload(view=view, values=values, user_id=user_id, **fields)

    def app_home_opened_payload(self, user_id: str, **fields: Any) -> dict[str, Any]:
        """The Events API body of `user_id` opening the App Home tab (with the view shown, if any)."""
        enterprise_id = fields.pop("enterprise_id", self.enterprise_id)
        team_id = fields.pop("team_id", self.team_id)
        fields.setdefault("view", self.home_of(user_id))
        event = app_home_opened_event(user_id=user_id, **fields)
        return event_callback(
            event, team_id=team_id, api_app_id=self.app_id, enterprise_id=enterprise_id
        )

    async def async_send_event(
        self,
        payload: dict[str, Any],
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> SocketAck:
        """Send an `events_api` envelope (an Events API body) over Socket Mode; its ack."""
        extra = {"retry_attempt": 0, "retry_reason": ""}
        return await self.async_send_envelope("events_api", payload, timeout=timeout, extra=extra)

    def send_event(self, payload: dict[str, Any], timeout: float = 5.0) -> SocketAck:
        """Sync `async_send_event`."""
        extra = {"retry_attempt": 0, "retry_reason": ""}
        return self.send_envelope("events_api", payload, timeout=timeout, extra=extra)

    async def async_send_interactive(
        self,
        payload: dict[str, Any],
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """Send an `interactive` envelope (e.g. block_actions); returns the ack payload."""
        accepts = payload.get("type") == "view_submission"
        ack = await self.async_send_envelope(
            "interactive", payload, accepts_response_payload=accepts, timeout=timeout
        )
        return ack.payload or {}

    def send_interactive(self, payload: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Sync `async_send_interactive`."""
        accepts = payload.get("type") == "view_submission"
        ack = self.send_envelope(
            "interactive", payload, accepts_response_payload=accepts, timeout=timeout
        )
        return ack.payload or {}

    async def _wait_connections(self, count: int, within: float) -> int:
        deadline = time.monotonic() + within
        while True:
            current = self.socket_connections_count()
            if current >= count:
                return current
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{current} Socket Mode connection(s) after {within}s, wanted {count}"
                )
            await asyncio.sleep(0.01)

    async def async_wait_for_socket_connection(
        self,
        timeout: float = 10.0,  # noqa: ASYNC109
        count: int = 1,
    ) -> int:
        """Wait until at least `count` clients are connected; returns how many are."""
        return await self._wait_connections(count, timeout)

    def wait_for_socket_connection(self, timeout: float = 10.0, count: int = 1) -> int:
        """Sync `async_wait_for_socket_connection`."""
        return self._run(self._wait_connections(count, timeout), timeout + 5)

    async def _disconnect_all(self, reason: str, close: bool) -> int:
        with self._lock:
            conns = list(self._connections.values())
        message = {"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-applink"}}
        for conn in conns:
            if not conn.ws.closed:
                with contextlib.suppress(ConnectionError):
                    await conn.ws.send_json(message)
        if close:
            await asyncio.gather(*(c.ws.close(code=WSCloseCode.OK) for c in conns))
        return len(conns)

    async def async_disconnect_all(
        self, reason: str = "refresh_requested", *, close: bool = True
    ) -> int:
        """Send Slack's `disconnect` message to every connection, then close them."""
        return await self._on_loop(self._disconnect_all(reason, close))

    def disconnect_all(self, reason: str = "refresh_requested", *, close: bool = True) -> int:
        """Sync `async_disconnect_all`; returns how many connections were told."""
        return self._run(self._disconnect_all(reason, close), 15)

    async def _drop_all(self) -> int:
        with self._lock:
            conns = list(self._connections.values())
        await asyncio.gather(
            *(c.ws.close(code=WSCloseCode.GOING_AWAY, message=b"dropped") for c in conns)
        )
        return len(conns)

    def drop_all_connections(self) -> int:
        """Close every websocket without a `disconnect` message (a network blip)."""
        return self._run(self._drop_all(), 15)

    async def async_drop_all_connections(self) -> int:
        """`drop_all_connections` for async tests."""
        return await self._on_loop(self._drop_all())
