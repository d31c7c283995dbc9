"""The HTTP face of the bot: Slack's endpoint (HTTP mode) and the health check (both modes).

What Slack never sends is refused here, before Bolt sees it; whatever Bolt fails on becomes a
plain 400, never a 500 that would tell Slack we broke.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest

from bot import __version__
from bot.config import Settings
from bot.db import DatabaseUnavailable
from bot.http_limits import quiet_disconnects

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"

_FORM = "application/x-www-form-urlencoded"
_JSON = "application/json"
#: Envelope types of the Events API: the only JSON that Slack POSTs to an app.
_EVENTS_API_TYPES = frozenset({"url_verification", "event_callback", "app_rate_limited"})
_SIGNATURE_HEADERS = ("X-Slack-Signature", "X-Slack-Request-Timestamp")


def _refusal(request: web.Request, body: str) -> web.Response | None:
    """Refuse what Slack never sends before Bolt sees it, or None to let Bolt decide.

    Slack posts slash commands and clicks as forms and Events API callbacks as JSON, with one
    signature and one integer timestamp. Bolt would run a signed JSON slash command, trust the
    first of two signatures, and log a traceback for a timestamp that is not a number.
    """
    for name in _SIGNATURE_HEADERS:
        if len(request.headers.getall(name, [])) > 1:
            return web.json_response({"error": f"duplicate {name}"}, status=401)
    timestamp = request.headers.get("X-Slack-Request-Timestamp")
    if timestamp is not None and not (
        timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12
    ):
        return web.json_response({"error": "invalid timestamp"}, status=401)
    if request.content_type == _FORM:
        if body.startswith("{"):
            return web.json_response({"error": "form body expected"}, status=400)
        return None
    if request.content_type == _JSON:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than Python goes
            return web.json_response({"error": "invalid JSON"}, status=400)
        if not isinstance(data, dict) or data.get("type") not in _EVENTS_API_TYPES:
            return web.json_response({"error": "not an Events API callback"}, status=400)
        return None
    return web.json_response({"error": "unsupported content type"}, status=415)


Status = Callable[[], Awaitable[dict[str, Any]]]


def build_web_app(
    bolt: AsyncApp | None, settings: Settings, status: Status | None = None
) -> web.Application:
    """aiohttp app with the Slack endpoint (HTTP mode) and a health check (both modes).

    The health check asks `status` (the database among others): a replica that cannot reach its
    database answers 503, so a load balancer stops sending it Slack's requests.
    """
    web_app = web.Application(
        client_max_size=settings.MAX_BODY_BYTES, middlewares=[quiet_disconnects]
    )

    async def health(_: web.Request) -> web.Response:
        body: dict[str, Any] = {"ok": True, "version": __version__}
        if status is not None:
            try:
                body.update(await asyncio.wait_for(status(), 2.0))
            except DatabaseUnavailable as exc:  # its file was deleted: say so, without the path
                log.warning("health check failed: %s", exc)
                return web.json_response(
                    {**body, "ok": False, "error": type(exc).__name__, "database": exc.reason},
                    status=503,
                )
            except Exception as exc:
                log.warning("health check failed: %s", type(exc).__name__)
                return web.json_response(
                    {**body, "ok": False, "error": type(exc).__name__}, status=503
                )
        return web.json_response(body)

    async def slack_events(request: web.Request) -> web.Response:
        assert bolt is not None
        try:
            body = await request.text()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "body too large"}, status=413)
        except (UnicodeDecodeError, ValueError):
            return web.json_response({"error": "body is not text"}, status=400)
        refusal = _refusal(request, body)
        if refusal is not None:
            log.info("refused a request Slack would not send: %s", refusal.text)
            return refusal
        try:
            bolt_request = AsyncBoltRequest(
                body=body,
                query=request.query_string,
                headers=dict(request.headers),  # type: ignore[arg-type]
            )
        except Exception:  # any unparsable body is the sender's problem
            log.info("rejected an unparsable request body")
            return web.json_response({"error": "unparsable body"}, status=400)
        bolt_response = await bolt.async_dispatch(bolt_request)
        if bolt_response.status >= 500:
            # Bolt answers 500 for a listener that never acked; never tell Slack we broke.
            log.warning("bolt answered %s; replying 400 instead", bolt_response.status)
            return web.json_response({"error": "not handled"}, status=400)
        return await to_aiohttp_response(bolt_response)

    web_app.router.add_get(HEALTH_PATH, health)
    if bolt is not None:
        web_app.router.add_post(EVENTS_PATH, slack_events)
    return web_app
