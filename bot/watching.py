"""Starting, stopping and listing a channel's watches of exports (what the slash command calls)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from bot import audit, messages, slack_org
from bot.access import may_list_watch
from bot.messages import Message, WatchRow
from bot.models import LINK_VALIDITY, EndReason, Export, ExportState, Subscription
from bot.runtime import Runtime
from bot.schedule_cards import RunOrigin
from bot.slack_out import Failure, SlackResult
from bot.store import WatchCapReached, WatchCaps

log = logging.getLogger(__name__)


#: Message metadata of a schedule's card: how a replica finds a card it may have posted.
CARD_EVENT = "asana_export_card"


async def answer_for_export(
    runtime: Runtime,
    export: Export,
    *,
    team_id: str,
    channel_id: str,
    user_id: str,
    audited: bool = True,
    origin: RunOrigin | None = None,
) -> Message:
    """A looked-up export: finished/error are shown; anything else is watched in this channel.

    A watch started gets an audit line in the card's thread unless `audited` is False (the
    caller audits what the person did: `new`; a schedule's run is nobody's action). A schedule's
    export (`origin`) is watched with the run it came from, which its card names.
    """
    now = runtime.now()
    if export.state.is_terminal:
        include_link = export.state is ExportState.FINISHED and await runtime.notify.links.allowed(
            channel_id
        )
        return messages.render_export(
            export,
            now=now,
            link_valid_until=now + LINK_VALIDITY,
            command=runtime.settings.SLACK_COMMAND,
            include_link=include_link,
        )
    next_poll_at = now + timedelta(seconds=runtime.poll_policy.initial)
    settings = runtime.settings
    try:
        sub, created = await runtime.store.subscribe(
            team_id=team_id,
            channel_id=channel_id,
            user_id=user_id,
            export=export,
            now=now,
            next_poll_at=next_poll_at,
            caps=WatchCaps(
                per_user=settings.MAX_WATCHES_PER_USER,
                per_channel=settings.MAX_WATCHES_PER_CHANNEL,
            ),
            schedule_run_id=origin.run_id if origin else None,
        )
    except WatchCapReached as full:
        log.info("refused a new watch of export %s: %s", export.gid, full)
        return messages.render_watch_cap(
            export.gid, scope=full.scope, cap=full.cap, command=settings.SLACK_COMMAND
        )
    if not created:
        return messages.render_already_watching(export, now=now, command=settings.SLACK_COMMAND)
    result = await post_card(runtime, sub, export, next_check_at=next_poll_at, origin=origin)
    if result.ts is not None:
        if audited:  # its audit event is the log line
            audit.started_watching(runtime, export.gid, user_id=user_id, channel_id=channel_id)
        else:
            log.info("channel %s now watches export %s", channel_id, export.gid)
        return messages.render_watch_started(export, now=now, next_check_at=next_poll_at)
    if result.failure in (Failure.CHANNEL, Failure.TOKEN):
        await runtime.store.unwatch(
            team_id=team_id,
            channel_id=channel_id,
            gid=export.gid,
            now=now,
            reason=EndReason.slack(result.error),
        )
        return messages.render_cannot_post(export, now=now, error=result.error)
    # Slack hiccuped: the watch stands (the link post will come); only the card is missing.
    return messages.render_watch_started(export, now=now, next_check_at=next_poll_at)


async def post_card(
    runtime: Runtime,
    sub: Subscription,
    export: Export,
    *,
    next_check_at: datetime | None,
    origin: RunOrigin | None = None,
) -> SlackResult:
    """Post a new watch's status card and remember its ts.

    A schedule's card carries metadata naming its watch, so a replica that takes over a run
    whose replica died can tell from the history whether the card was already posted.
    """
    watchers = await runtime.store.count_watchers(export.gid)
    card = messages.render_status_card(
        export,
        now=runtime.now(),
        watchers=watchers,
        next_check_at=next_check_at,
        origin=origin.card if origin else None,
    )
    metadata = (
        {"event_type": CARD_EVENT, "event_payload": {"gid": export.gid, "subscription_id": sub.id}}
        if origin
        else None
    )
    # Through the notifier: a paused token is not tried again, and a dead one starts the pause.
    result = await runtime.notify.post(sub.channel_id, card, metadata=metadata)
    if result.ts is not None:
        await runtime.store.set_card_ts(sub.id, result.ts)
    return result


async def stop_watching(
    runtime: Runtime, *, team_id: str, channel_id: str, gid: str
) -> tuple[Message, Subscription | None]:
    """End this channel's watch; returns the answer and the ended subscription (if any)."""
    now = runtime.now()
    sub = await runtime.store.unwatch(team_id=team_id, channel_id=channel_id, gid=gid, now=now)
    answer = messages.render_unwatched(
        gid, found=sub is not None, command=runtime.settings.SLACK_COMMAND
    )
    return answer, sub


#: How long `list all` waits for Slack's membership answers: the list is the ack itself.
MEMBERSHIP_DEADLINE = 1.5


async def list_watches(
    runtime: Runtime, *, team_id: str, channel_id: str | None, asked_in: str = "", user_id: str = ""
) -> Message:
    """This channel's watches, or the workspace's when channel_id is None.

    The workspace's list shows a watch of another channel only to a member of that channel
    (`bot.access.may_list_watch`); the others are counted, not named.
    """
    pairs = await runtime.store.list_subscriptions(team_id=team_id, channel_id=channel_id)
    withheld = 0
    if channel_id is None:
        elsewhere = [sub.channel_id for sub, _ in pairs if sub.channel_id != asked_in]
        members = (
            await slack_org.memberships(
                runtime.slack, elsewhere, user_id, deadline=MEMBERSHIP_DEADLINE
            )
            if elsewhere and user_id
            else {}
        )
        visible = [
            (sub, row)
            for sub, row in pairs
            if may_list_watch(
                sub.channel_id, asked_in=asked_in, asker_is_member=members.get(sub.channel_id)
            )
        ]
        withheld = len(pairs) - len(visible)
        pairs = visible
    rows = [
        WatchRow(
            gid=sub.export_gid,
            organization_name=row.organization_name,
            state=row.state,
            since=sub.created_at,
            user_id=sub.user_id,
            channel_id=sub.channel_id,
            next_check_at=row.next_poll_at,
        )
        for sub, row in pairs
    ]
    return messages.render_watch_list(
        rows,
        now=runtime.now(),
        scope="channel" if channel_id else "workspace",
        command=runtime.settings.SLACK_COMMAND,
        withheld=withheld,
    )
