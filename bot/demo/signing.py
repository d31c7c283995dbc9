"""Send requests to the bot exactly as Slack does in HTTP mode: form-encoded and signed.

Slack signs every request with `v0=HMAC-SHA256(signing_secret, "v0:{timestamp}:{raw body}")` in
`X-Slack-Signature`, with the timestamp in `X-Slack-Request-Timestamp`; Bolt rejects a bad
signature or a timestamp more than five minutes off. The builders here produce the same fields
Slack sends for a slash command, a button click (`block_actions`, in a message or in the App Home
tab), a modal's submission (`view_submission`) and an Events API event (`app_home_opened`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import urlencode

import httpx

#: The legacy verification token Slack still puts in every payload (Bolt ignores it).
VERIFICATION_TOKEN = "fake-verification-token"

#: Slack's own User-Agent for requests it sends to apps.
SLACK_USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"


class SignedResponse(NamedTuple):
    """What the bot answered to one signed request."""

    status: int
    headers: httpx.Headers
    body_text: str
    elapsed: float

    def json(self) -> Any:
        """The body parsed as JSON (Bolt answers acks with a JSON body or an empty one)."""
        return json.loads(self.body_text) if self.body_text else None


def sign(body: bytes | str, secret: str, timestamp: int | str) -> str:
    """Slack's v0 request signature for `body` sent at `timestamp` (seconds)."""
    raw = body.encode() if isinstance(body, str) else body
    base = b"v0:" + str(timestamp).encode() + b":" + raw
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def new_trigger_id() -> str:
    """A trigger_id shaped like Slack's (digits.digits.hex)."""
    return (
        f"{secrets.randbelow(10**10):010d}.{secrets.randbelow(10**10):010d}.{secrets.token_hex(16)}"
    )


def new_action_ts() -> str:
    """An action_ts shaped like Slack's (epoch seconds with six decimals)."""
    return f"{time.time():.6f}"


def slash_command_form(
    *,
    command: str = "/asana-export",
    text: str,
    response_url: str,
    team_id: str = "T0001",
    team_domain: str = "example",
    channel_id: str = "C0001",
    channel_name: str = "general",
    user_id: str = "U0001",
    user_name: str = "alice",
    trigger_id: str | None = None,
    api_app_id: str = "A0001",
    enterprise_id: str | None = None,
    enterprise_name: str | None = None,
    is_enterprise_install: str = "false",
    token: str = VERIFICATION_TOKEN,
) -> dict[str, str]:
    """The fields of a slash command, in Slack's order (same dict for HTTP and Socket Mode)."""
    form: dict[str, str] = {"token": token, "team_id": team_id, "team_domain": team_domain}
    if enterprise_id is not None:
        form["enterprise_id"] = enterprise_id
        form["enterprise_name"] = enterprise_name or "Example Enterprise"
    form.update(
        {
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user_name,
            "command": command,
            "text": text,
            "api_app_id": api_app_id,
            "is_enterprise_install": is_enterprise_install,
            "response_url": response_url,
            "trigger_id": trigger_id or new_trigger_id(),
        }
    )
    return form


def block_actions_payload(
    *,
    action_id: str,
    value: str | None = None,
    response_url: str,
    block_id: str = "actions",
    button_text: str = "Button",
    message: Mapping[str, Any] | None = None,
    message_ts: str | None = None,
    channel_id: str = "C0001",
    channel_name: str = "general",
    user_id: str = "U0001",
    user_name: str = "alice",
    team_id: str = "T0001",
    team_domain: str = "example",
    api_app_id: str = "A0001",
    trigger_id: str | None = None,
    enterprise_id: str | None = None,
    user_team_id: str | None = None,
    is_enterprise_install: bool = False,
    token: str = VERIFICATION_TOKEN,
) -> dict[str, Any]:
    """The payload Slack sends when a user clicks a button in a message (`block_actions`).

    `message` is the clicked message as Slack shows it (e.g. `FakeSlack.wire_message(...)`); a
    minimal one is made up from `message_ts` when absent. `team_id` is the workspace the message
    lives in (`team.id`); `user_team_id` is the clicker's home (`user.team_id`, default
    `team_id`): another workspace's T... for a Slack Connect guest, or an Enterprise org's E...
    for a member of an Enterprise org.

    For an org-wide install (`is_enterprise_install`) the payload's `team` is null, as Slack may
    send it: the clicker's workspace is then only in `user.team_id`.
    """
    if message is None:
        ts = message_ts or new_action_ts()
        message = {"type": "message", "user": "U0BOT", "ts": ts, "text": "", "team": team_id}
    msg = dict(message)
    ts = str(msg.get("ts") or message_ts or new_action_ts())
    return {
        "type": "block_actions",
        "user": _clicker(user_id, user_name, user_team_id or team_id),
        "api_app_id": api_app_id,
        "token": token,
        "container": {
            "type": "message",
            "message_ts": ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        },
        "trigger_id": trigger_id or new_trigger_id(),
        "team": None if is_enterprise_install else {"id": team_id, "domain": team_domain},
        "enterprise": None if enterprise_id is None else {"id": enterprise_id, "name": "Ent"},
        "is_enterprise_install": is_enterprise_install,
        "channel": {"id": channel_id, "name": channel_name},
        "message": msg,
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [_button(action_id, block_id, button_text, value)],
    }


def _button(action_id: str, block_id: str, text: str, value: str | None) -> dict[str, Any]:
    """The clicked button as a block_actions payload carries it (a message's or a view's)."""
    action: dict[str, Any] = {
        "action_id": action_id,
        "block_id": block_id,
        "text": {"type": "plain_text", "text": text, "emoji": True},
        "type": "button",
        "action_ts": new_action_ts(),
    }
    if value is not None:
        action["value"] = value
    return action


def _clicker(user_id: str, user_name: str, team_id: str) -> dict[str, Any]:
    """The `user` of an interaction payload; `team_id` is the person's own workspace."""
    return {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id}


def home_block_actions_payload(
    *,
    action_id: str,
    value: str | None = None,
    view: Mapping[str, Any] | None = None,
    block_id: str = "home",
    button_text: str = "Button",
    user_id: str = "U0001",
    user_name: str = "alice",
    team_id: str = "T0001",
    team_domain: str = "example",
    api_app_id: str = "A0001",
    trigger_id: str | None = None,
    enterprise_id: str | None = None,
    user_team_id: str | None = None,
    token: str = VERIFICATION_TOKEN,
) -> dict[str, Any]:
    """A button click in the App Home tab: Slack sends the view, and no channel or response_url.

    `view` is the home view as published (e.g. `FakeSlack.views()[-1]["view"]` with its id); a
    minimal one is made up when absent.
    """
    shown = dict(view or {"type": "home", "blocks": []})
    shown.setdefault("id", "V" + secrets.token_hex(5).upper())
    shown.setdefault("hash", f"{int(time.time())}.{secrets.token_hex(4)}")
    shown.setdefault("team_id", team_id)
    shown.setdefault("app_id", api_app_id)
    return {
        "type": "block_actions",
        "user": _clicker(user_id, user_name, user_team_id or team_id),
        "api_app_id": api_app_id,
        "token": token,
        "container": {"type": "view", "view_id": shown["id"]},
        "trigger_id": trigger_id or new_trigger_id(),
        "team": {"id": team_id, "domain": team_domain},
        "enterprise": None if enterprise_id is None else {"id": enterprise_id, "name": "Ent"},
        "is_enterprise_install": False,
        "view": shown,
        "actions": [_button(action_id, block_id, button_text, value)],
    }


def view_submission_payload(
    *,
    view: Mapping[str, Any],
    values: Mapping[str, Mapping[str, Any]],
    user_id: str = "U0001",
    user_name: str = "alice",
    team_id: str = "T0001",
    team_domain: str = "example",
    api_app_id: str = "A0001",
    trigger_id: str | None = None,
    enterprise_id: str | None = None,
    user_team_id: str | None = None,
    token: str = VERIFICATION_TOKEN,
) -> dict[str, Any]:
    """A modal's submission: the view as opened (id, callback_id, private_metadata) and the
    state of its inputs, `values[block_id][action_id]` (e.g. `{"type": "plain_text_input",
    "value": "123"}` or `{"type": "conversations_select", "selected_conversation": "C1"}`)."""
    submitted = dict(view)
    submitted.setdefault("id", "V" + secrets.token_hex(5).upper())
    submitted.setdefault("hash", f"{int(time.time())}.{secrets.token_hex(4)}")
    submitted["state"] = {"values": {k: dict(v) for k, v in values.items()}}
    return {
        "type": "view_submission",
        "team": {"id": team_id, "domain": team_domain},
        "user": _clicker(user_id, user_name, user_team_id or team_id),
        "api_app_id": api_app_id,
        "token": token,
        "trigger_id": trigger_id or new_trigger_id(),
        "view": submitted,
        "response_urls": [],
        "enterprise": None if enterprise_id is None else {"id": enterprise_id, "name": "Ent"},
        "is_enterprise_install": False,
    }


def event_callback(
    event: Mapping[str, Any],
    *,
    team_id: str = "T0001",
    api_app_id: str = "A0001",
    enterprise_id: str | None = None,
    token: str = VERIFICATION_TOKEN,
) -> dict[str, Any]:
    """The Events API envelope Slack wraps an event in (same JSON over HTTP and Socket Mode)."""
    return {
        "token": token,
        "team_id": team_id,
        "enterprise_id": enterprise_id,
        "api_app_id": api_app_id,
        "event": dict(event),
        "type": "event_callback",
        "event_id": "Ev" + secrets.token_hex(5).upper(),
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": enterprise_id,
                "team_id": team_id,
                "user_id": "U0BOT",
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
    }


def app_home_opened_event(
    *,
    user_id: str = "U0001",
    channel_id: str = "D0001",
    tab: str = "home",
    view: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`app_home_opened`: `channel` is the user's DM with the app; `view` once one was published."""
    event: dict[str, Any] = {
        "type": "app_home_opened",
        "user": user_id,
        "channel": channel_id,
        "tab": tab,
        "event_ts": new_action_ts(),
    }
    if view is not None:
        event["view"] = dict(view)
    return event


def post_event(
    url: str, payload: Mapping[str, Any], *, secret: str, timeout: float = 10.0
) -> SignedResponse:
    """Send one signed Events API request (JSON, as Slack sends events)."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return post_signed(url, body, secret=secret, content_type="application/json", timeout=timeout)


def post_interactive(
    url: str, payload: Mapping[str, Any], *, secret: str, timeout: float = 10.0
) -> SignedResponse:
    """Send one signed interactive payload (a home click, a view_submission) as Slack does."""
    return post_signed(url, form_body(interactive_form(payload)), secret=secret, timeout=timeout)


def block_actions_form(**kwargs: Any) -> dict[str, str]:
    """The form Slack POSTs for a button click: one `payload` field holding the JSON."""
    return interactive_form(block_actions_payload(**kwargs))


def interactive_form(payload: Mapping[str, Any]) -> dict[str, str]:
    """Wrap any interactive payload the way Slack does over HTTP (`payload=<json>`)."""
    return {"payload": json.dumps(payload, separators=(",", ":"))}


def form_body(fields: Mapping[str, str]) -> bytes:
    """URL-encode fields as Slack does (spaces as `+`)."""
    return urlencode(dict(fields)).encode()


def signed_headers(
    body: bytes,
    *,
    secret: str,
    content_type: str = "application/x-www-form-urlencoded",
    timestamp: int | None = None,
    signature: str | None = None,
) -> dict[str, str]:
    """Slack's request headers; pass `signature` to forge one, `timestamp` to make it stale."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": signature if signature is not None else sign(body, secret, ts),
        "User-Agent": SLACK_USER_AGENT,
        "Accept": "application/json,*/*",
    }


def post_signed(
    url: str,
    body: bytes,
    *,
    secret: str,
    content_type: str = "application/x-www-form-urlencoded",
    timestamp: int | None = None,
    signature: str | None = None,
    timeout: float = 10.0,
) -> SignedResponse:
    """POST `body` to the bot signed like Slack (or forged/stale when asked); sync."""
    headers = signed_headers(
        body, secret=secret, content_type=content_type, timestamp=timestamp, signature=signature
    )
    start = time.monotonic()
    with httpx.Client(timeout=timeout, trust_env=False) as client:
        resp = client.post(url, content=body, headers=headers)
    return SignedResponse(resp.status_code, resp.headers, resp.text, time.monotonic() - start)


async def async_post_signed(
    url: str,
    body: bytes,
    *,
    secret: str,
    content_type: str = "application/x-www-form-urlencoded",
    timestamp: int | None = None,
    signature: str | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> SignedResponse:
    """Same as `post_signed` for async tests that serve the app on their own loop."""
    headers = signed_headers(
        body, secret=secret, content_type=content_type, timestamp=timestamp, signature=signature
    )
    start = time.monotonic()
    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
        resp = await client.post(url, content=body, headers=headers)
    return SignedResponse(resp.status_code, resp.headers, resp.text, time.monotonic() - start)


def post_slash_command(
    url: str, *, secret: str, timeout: float = 10.0, **fields: Any
) -> SignedResponse:
    """Send one signed slash command; `fields` go to `slash_command_form`."""
    return post_signed(url, form_body(slash_command_form(**fields)), secret=secret, timeout=timeout)


def post_block_actions(
    url: str, *, secret: str, timeout: float = 10.0, **fields: Any
) -> SignedResponse:
    """Send one signed button click; `fields` go to `block_actions_payload`."""
    body = form_body(block_actions_form(**fields))
    return post_signed(url, body, secret=secret, timeout=timeout)
