"""Button listeners: the download link button (ack only), "Get a fresh link", "Watch it instead"."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt import BoltResponse
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest

from bot import lookup, messages
from bot.access import clicker_team_id, payload_team_id
from bot.command_parser import Lookup, parse_command
from bot.runtime import Runtime
from handlers.acking import returns_at_ack

log = logging.getLogger(__name__)


def _clicked_gid(body: dict[str, Any]) -> str | None:
    """The gid a button carries in its value, validated like typed input (it can be forged)."""
    actions = body.get("actions") if isinstance(body, dict) else None
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        return None
    value = actions[0].get("value")
    parsed = parse_command(value if isinstance(value, str) else None)
    return parsed.gid if isinstance(parsed, Lookup) else None


def _well_formed_actions(body: dict[str, Any]) -> bool:
    """Bolt indexes `actions[0]["action_id"]` unguarded: anything else crashes its matchers."""
    actions = body.get("actions")
    return (
        isinstance(actions, list)
        and len(actions) > 0
        and all(isinstance(a, dict) and isinstance(a.get("action_id"), str) for a in actions)
    )


class AckMalformedClicks(AsyncMiddleware):
    """Ack and drop a click whose `actions` Bolt cannot index, before Bolt tries to.

    A class, not a function middleware: Bolt builds a function middleware's arguments with the
    same unguarded indexing. Acking keeps Slack from showing an error and Socket Mode from
    redelivering the envelope.
    """

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],  # Bolt passes it by this name
    ) -> BoltResponse:
        body = req.body
        if body.get("type") == "block_actions" and not _well_formed_actions(body):
            log.info("ignored a malformed block_actions payload")
            return BoltResponse(status=200, body="")
        return await next()


def _clicker(body: dict[str, Any]) -> tuple[str, str]:
    user = body.get("user")
    channel = body.get("channel")
    user_id = user.get("id") if isinstance(user, dict) else None
    channel_id = channel.get("id") if isinstance(channel, dict) else None
    return str(user_id or ""), str(channel_id or "")


async def fresh_link(runtime: Runtime, body: dict[str, Any], respond: AsyncRespond) -> None:
    """Authorize the click and read its gid; `bot.lookup.fresh_link` answers, privately."""
    user_id, channel_id = _clicker(body)
    if not runtime.settings.allows(user_id, channel_id):
        log.warning("refused a fresh link to user %s in channel %s", user_id[:20], channel_id[:20])
        answer = messages.render_refused(what="get this link")
    elif (gid := _clicked_gid(body)) is None:
        answer = messages.render_usage("That button carries no valid export gid.")
    else:
        answer = await lookup.fresh_link(
            runtime,
            gid,
            user_id=user_id,
            channel_id=channel_id,
            clicker_team=clicker_team_id(body),
        )
    await respond(**answer.to_ack(), replace_original=False)


async def watch_instead(runtime: Runtime, body: dict[str, Any], respond: AsyncRespond) -> None:
    """ "Watch it instead" (offered by `new`): watch the running export here, as `watch` would."""
    user_id, channel_id = _clicker(body)
    team_id = payload_team_id(body) or ""  # org-wide installs may get `team: null`
    if not runtime.settings.allows(user_id, channel_id):
        log.warning("refused a watch to user %s in channel %s", user_id[:20], channel_id[:20])
        answer = messages.render_refused(what="watch exports")
    elif (gid := _clicked_gid(body)) is None:
        answer = messages.render_usage("That button carries no valid export gid.")
    else:
        answer = await lookup.look_up_and_watch(
            runtime, gid, team_id=team_id, channel_id=channel_id, user_id=user_id
        )
    await respond(**answer.to_ack(), replace_original=False)


def register(app: AsyncApp, runtime: Runtime) -> None:
    """Attach the button listeners to `app`."""

    app.middleware(AckMalformedClicks())

    @app.action(messages.DOWNLOAD_ACTION)
    @returns_at_ack
    async def on_download(ack: AsyncAck) -> None:
        # A URL button still sends a payload; Slack shows a warning unless it is acked.
        await ack()

    @app.action(messages.FRESH_LINK_ACTION)
    @returns_at_ack
    async def on_fresh_link(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        if not respond.response_url:
            # Buttons in App Home or a modal carry no response_url: there is nowhere to answer.
            log.info("fresh link clicked where the bot cannot answer (no response_url)")
            return
        try:
            await fresh_link(runtime, body, respond)
        except Exception:
            log.exception("fresh link failed")
            with contextlib.suppress(Exception):  # a second failure must not reach Bolt
                await respond(**messages.render_internal_error().to_ack(), replace_original=False)

    @app.action(messages.WATCH_INSTEAD_ACTION)
    @returns_at_ack
    async def on_watch_instead(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        if not respond.response_url:
            log.info("watch instead clicked where the bot cannot answer (no response_url)")
            return
        try:
            await watch_instead(runtime, body, respond)
        except Exception:
            log.exception("watch instead failed")
            with contextlib.suppress(Exception):  # a second failure must not reach Bolt
                await respond(**messages.render_internal_error().to_ack(), replace_original=False)

    @app.action(re.compile(".*"))
    @returns_at_ack
    async def on_unknown_action(ack: AsyncAck, body: dict[str, Any]) -> None:
        # Buttons from older versions of the bot: ack so Slack shows no error, and say so in the log.
        await ack()
        actions = body.get("actions") or [{}]
        log.info("ignored unknown action %r", str(actions[0].get("action_id"))[:64])
