"""The HTTP face of the bot: Slack's endpoint (HTTP mode); liveness, readiness and metrics
(both modes).

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
from bot.http_limits import quiet_disconnects

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"

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


#: What /healthz adds to its body (in memory only: liveness must not wait on anything).
Status = Callable[[], dict[str, Any]]
#: /readyz: (ready, body naming each part and its state).
Ready = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
#: /metrics: the Prometheus text exposition.
Scrape = Callable[[], Awaitable[bytes]]
#: A readiness check that takes longer than this is itself a failure.
READY_TIMEOUT = 5.0


def build_web_app(
    bolt: AsyncApp | None,
    settings: Settings,
    status: Status | None = None,
    *,
    ready: Ready | None = None,
    scrape: Scrape | None = None,
) -> web.Application:
    """aiohttp app with the Slack endpoint (HTTP mode), /healthz, /readyz and /metrics.

    /healthz is liveness: 200 while the process serves, whatever its dependencies do (a
    restart would not fix them). /readyz is readiness: 503 naming the failing part (the
    database, the scheduler, Slack, the websocket), so a load balancer stops sending this
    replica Slack's requests until it is back.
    """
    web_app = web.Application(
        client_max_size=settings.MAX_BODY_BYTES, middlewares=[quiet_disconnects]
    )

    async def health(_: web.Request) -> web.Response:
        body: dict[str, Any] = {"ok": True, "version": __version__}
        if status is not None:
            body.update(status())
        return web.json_response(body)

    async def readiness(_: web.Request) -> web.Response:
        body: dict[str, Any] = {"version": __version__}
        if status is not None:
            body.update(status())
        if ready is None:
            return web.json_response({**body, "ready": True, "failing": [], "parts": {}})
        try:
            ok, found = await asyncio.wait_for(ready(), READY_TIMEOUT)
        except Exception as exc:
            log.warning("readiness check failed: %s", type(exc).__name__)
            ok, found = False, {"ready": False, "failing": ["check"], "error": type(exc).__name__}
        if not ok:
            log.debug("not ready: %s", ", ".join(found.get("failing", [])))
        return web.json_response({**body, **found}, status=200 if ok else 503)

    async def metrics(_: web.Request) -> web.Response:
        assert scrape is not None
        from bot.metrics import CONTENT_TYPE

        response = web.Response(body=await scrape())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

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
    web_app.router.add_get(READY_PATH, readiness)
    if scrape is not None:
        web_app.router.add_get(METRICS_PATH, metrics)
    if bolt is not None:
        web_app.router.add_post(EVENTS_PATH, slack_events)
    return web_app
