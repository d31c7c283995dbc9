"""Looking an export up for a person: fair use first, then Asana, then the answer to show.

The slash command (`look_up_and_watch`) and the "Get a fresh link" button (`fresh_link`) share
these steps; their listeners only parse, authorize and reply.
"""

from __future__ import annotations

import logging

from bot import audit, messages, slack_out, watching
from bot.access import ClickVerdict, LinkPolicy, may_give_link
from bot.asana import AsanaError
from bot.log_context import bind
from bot.messages import Message
from bot.models import LINK_VALIDITY, Export, ExportState
from bot.runtime import Runtime

log = logging.getLogger(__name__)


def _refused_by_fair_use(runtime: Runtime, user_id: str) -> Message | None:
    """The "slow down" answer when this person's request may not call Asana now."""
    refused = runtime.fair.admit(user_id)
    if refused is None:
        return None
    runtime.metrics.deferred.labels(refused.limit.value).inc()
    return messages.render_fair_use_refusal(
        refused, per_minute=runtime.settings.USER_REQUESTS_PER_MINUTE
    )


async def _fetch(runtime: Runtime, gid: str, *, what: str) -> Export | Message:
    """The export from Asana, or the problem to show instead."""
    try:
        return await runtime.asana.get_export(gid)
    except AsanaError as exc:
        log.info("%s export %s failed: %s", what, gid, exc.kind)
        return messages.render_problem(
            exc.kind, gid=gid, asana_message=exc.message, retry_after=exc.retry_after
        )


async def look_up_and_watch(
    runtime: Runtime, gid: str, *, team_id: str, channel_id: str, user_id: str
) -> Message:
    """Fetch the export; show it if it is over, otherwise watch it in this channel."""
    with bind(gid=gid):  # every line of this lookup names the export
        slow_down = _refused_by_fair_use(runtime, user_id)  # no Asana call past fair use
        if slow_down is not None:
            return slow_down
        export = await _fetch(runtime, gid, what="lookup of")
        if isinstance(export, Message):
            return export
        return await watching.answer_for_export(
            runtime, export, team_id=team_id, channel_id=channel_id, user_id=user_id
        )


async def link_verdict(
    runtime: Runtime, *, clicker_team: str | None, channel_id: str
) -> ClickVerdict:
    """Ask Slack who we are and what the channel is (now, not cached), then decide."""
    policy = runtime.notify.links.policy
    if policy is LinkPolicy.ANYWHERE:
        return ClickVerdict.GIVE
    org = await runtime.installation.get(runtime.slack)
    workspaces = await runtime.installation.workspaces(runtime.slack)
    channel = await slack_out.channel_info(runtime.slack, channel_id) if channel_id else None
    return may_give_link(
        policy, clicker_team=clicker_team, org=org, channel=channel, workspaces=workspaces
    )


async def fresh_link(
    runtime: Runtime, gid: str, *, user_id: str, channel_id: str, clicker_team: str | None
) -> Message:
    """Re-fetch the export for the clicker: a newly minted link, or why there is none.

    The answer is for the clicker alone (ephemeral).
    """
    verdict = await link_verdict(runtime, clicker_team=clicker_team, channel_id=channel_id)
    if verdict is not ClickVerdict.GIVE:
        log.info(
            "withheld the link of export %s from user %s in channel %s: %s",
            gid,
            user_id[:20],
            channel_id[:20],
            verdict.value,
        )
        return messages.render_link_withheld(
            gid,
            foreign_user=verdict is ClickVerdict.FOREIGN_USER,
            command=runtime.settings.SLACK_COMMAND,
        )
    # Only a click that may see the link spends people's Asana share.
    slow_down = _refused_by_fair_use(runtime, user_id)
    if slow_down is not None:
        return slow_down
    export = await _fetch(runtime, gid, what="fresh link for")
    if isinstance(export, Message):
        return export
    now = runtime.now()
    if export.state is ExportState.FINISHED and export.download_url:
        audit.fresh_link(runtime, gid, user_id=user_id, channel_id=channel_id)
        return messages.render_fresh_link(export, now=now, link_valid_until=now + LINK_VALIDITY)
    answer = messages.render_export(export, now=now)
    return Message(answer.text, answer.blocks, "ephemeral")
