"""Button listeners: the download link button (ack only) and "Get a fresh link"."""

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

from bot import messages, slack_out
from bot.access import ClickVerdict, LinkPolicy, clicker_team_id, may_give_link
from bot.asana import AsanaError
from bot.command_parser import Lookup, parse_command
from bot.models import LINK_VALIDITY, ExportState
from bot.runtime import Runtime

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


async def _link_verdict(runtime: Runtime, body: dict[str, Any], channel_id: str) -> ClickVerdict:
    """Ask Slack who we are and what the channel is (now, not cached), then decide."""
    policy = runtime.links.policy
    if policy is LinkPolicy.ANYWHERE:
        return ClickVerdict.GIVE
    org = await runtime.installation.get(runtime.slack)
    clicker_team = clicker_team_id(body)
    channel = await slack_out.channel_info(runtime.slack, channel_id) if channel_id else None
    return may_give_link(policy, clicker_team=clicker_team, org=org, channel=channel)


async def fresh_link(runtime: Runtime, body: dict[str, Any], respond: AsyncRespond) -> None:
    """Re-fetch the export and show the clicker a newly minted link, privately."""
    settings = runtime.settings
    user_id, channel_id = _clicker(body)
    if not settings.allows(user_id, channel_id):
        log.warning("refused a fresh link to user %s in channel %s", user_id[:20], channel_id[:20])
        await respond(
            **messages.render_refused(what="get this link").to_ack(), replace_original=False
        )
        return
    gid = _clicked_gid(body)
    if gid is None:
        await respond(
            **messages.render_usage("That button carries no valid export gid.").to_ack(),
            replace_original=False,
        )
        return
    verdict = await _link_verdict(runtime, body, channel_id)
    if verdict is not ClickVerdict.GIVE:
        log.info(
            "withheld the link of export %s from user %s in channel %s: %s",
            gid,
            user_id[:20],
            channel_id[:20],
            verdict.value,
        )
        withheld = messages.render_link_withheld(
            gid,
            foreign_user=verdict is ClickVerdict.FOREIGN_USER,
            command=settings.SLACK_COMMAND,
        )
        await respond(**withheld.to_ack(), replace_original=False)
        return
    refused = runtime.fair.admit(user_id)  # no Asana call past a fair-use limit
    if refused is not None:
        slow = messages.render_fair_use_refusal(
            refused, per_minute=settings.USER_REQUESTS_PER_MINUTE
        )
        await respond(**slow.to_ack(), replace_original=False)
        return
    try:
        export = await runtime.asana.get_export(gid)
    except AsanaError as exc:
        log.info("fresh link for export %s failed: %s", gid, exc.kind)
        problem = messages.render_problem(
            exc.kind, gid=gid, asana_message=exc.message, retry_after=exc.retry_after
        )
        await respond(**problem.to_ack(), replace_original=False)
        return
    now = runtime.now()
    if export.state is ExportState.FINISHED and export.download_url:
        answer = messages.render_fresh_link(export, now=now, link_valid_until=now + LINK_VALIDITY)
    else:
        answer = messages.render_export(export, now=now)
        answer = messages.Message(answer.text, answer.blocks, "ephemeral")
    await respond(**answer.to_ack(), replace_original=False)


def register(app: AsyncApp, runtime: Runtime) -> None:
    """Attach the button listeners to `app`."""

    app.middleware(AckMalformedClicks())

    @app.action(messages.DOWNLOAD_ACTION)
    async def on_download(ack: AsyncAck) -> None:
        # A URL button still sends a payload; Slack shows a warning unless it is acked.
        await ack()

    @app.action(messages.FRESH_LINK_ACTION)
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

    @app.action(re.compile(".*"))
    async def on_unknown_action(ack: AsyncAck, body: dict[str, Any]) -> None:
        # Buttons from older versions of the bot: ack so Slack shows no error, and say so in the log.
        await ack()
        actions = body.get("actions") or [{}]
        log.info("ignored unknown action %r", str(actions[0].get("action_id"))[:64])
