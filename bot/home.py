"""The App Home tab: what one person may see of their workspace, and what its buttons do.

Scoped by the workspace (`team_id`) of the event or click. Privacy follows `list all`
(`bot.access.may_list_watch`): a watch, a schedule or an ended watch is shown only to a member of
its channel (there is no "asked in" channel in the home), the others are counted. The buttons
are checked again when clicked, whatever the view showed: a click payload can be forged.

- Unwatch: its requester, a member of its channel, or an admin (`creating.may_create`);
- Remove (a schedule): the rules of `unschedule` (`scheduling.remove_schedule`);
- New export: admins only; the modal's submission goes through `creating.new_for_person`, as
  `new` does, and watches the export in the channel picked in the modal.

A click in the home tab carries no channel and no response_url, so there is no ephemeral message
to answer with: the outcome (done, or refused and why) is shown at the top of the clicker's own
home view, published again after every click. Only the clicker sees their home.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bot import audit, creating, messages, scheduling, slack_org, slack_out
from bot.access import is_allowed, may_list_watch
from bot.archive.records import Archives
from bot.command_parser import New, parse_command
from bot.messages import ArchiveSummary, EndedWatch, HomeContent, HomeWatch
from bot.models import Subscription
from bot.runtime import Runtime
from bot.store import _export_row, _subscription, exports, subscriptions

log = logging.getLogger(__name__)

#: How long the home waits for Slack's membership answers (an event has no 3 s answer to give).
MEMBERSHIP_DEADLINE = 5.0
#: Ended watches shown (newest first): the issue's "last 20" that the viewer may see, found
#: among the workspace's last ENDED_SCANNED (so other channels' ends do not crowd them out).
ENDED_SHOWN = 20
ENDED_SCANNED = 100
#: Archives shown on the home (the newest of the exports its reader may see).
ARCHIVES_SHOWN = 10
_ID = re.compile(r"[0-9]{1,18}")
_CHANNEL = re.compile(r"[CGD][A-Z0-9]{2,40}")


def user_allowed(runtime: Runtime, user_id: str) -> bool:
    """ALLOWED_USERS for the home (no channel: ALLOWED_CHANNELS applies to each action's own)."""
    return is_allowed(
        user_id,
        None,
        allowed_users=runtime.settings.allowed_users,
        allowed_channels=frozenset(),
    )


async def archive_summaries(runtime: Runtime, gids: Iterable[str]) -> list[ArchiveSummary] | None:
    """The home's Archive section: None while archiving is off (no ARCHIVE_URL); else the latest
    archives of the exports this person sees watched here (list all's privacy rule holds)."""
    if not runtime.settings.ARCHIVE_URL:
        return None
    rows = await Archives(runtime.store).recent(ARCHIVES_SHOWN, gids=gids)
    return [
        ArchiveSummary(gid=r.gid, state=r.state.value, at=r.updated_at, location=r.location)
        for r in rows
    ]


async def ended_watches(
    runtime: Runtime, team_id: str, *, limit: int
) -> list[tuple[Subscription, str | None]]:
    """The workspace's last `limit` ended watches, newest first, with the export's org name."""
    s = subscriptions.c
    query = (
        sa.select(subscriptions, exports.c.organization_name)
        .join(exports, exports.c.gid == s.export_gid)
        .where(s.team_id == team_id, s.ended_at.is_not(None))
        .order_by(s.ended_at.desc(), s.id.desc())
        .limit(limit)
    )
    rows = await runtime.store.read(lambda conn: conn.execute(query).all())
    return [(_subscription(r._mapping), r._mapping[exports.c.organization_name]) for r in rows]


async def subscription(runtime: Runtime, sub_id: int) -> tuple[Subscription, str | None] | None:
    """One watch by id (active or not), with its export's state, for a click to act on."""
    s = subscriptions.c
    query = (
        sa.select(subscriptions, exports)
        .join(exports, exports.c.gid == s.export_gid)
        .where(s.id == sub_id)
    )
    row = await runtime.store.read(lambda conn: conn.execute(query).first())
    if row is None:
        return None
    return _subscription(row._mapping), _export_row(row._mapping).organization_name


async def content(
    runtime: Runtime, *, team_id: str, user_id: str, notice: str | None = None
) -> HomeContent:
    """What `user_id` may see of workspace `team_id`: filtered by channel membership."""
    if not user_allowed(runtime, user_id):
        return HomeContent(refused=True, notice=notice)
    store, now = runtime.store, runtime.now()
    pairs = await store.list_subscriptions(team_id=team_id)
    schedules = await store.list_schedules(team_id, None)
    ended = await ended_watches(runtime, team_id, limit=ENDED_SCANNED)
    channels = [sub.channel_id for sub, _ in pairs]
    channels += [r.channel_id for r in schedules] + [sub.channel_id for sub, _ in ended]
    members, verdict = await asyncio.gather(
        slack_org.memberships(runtime.slack, channels, user_id, deadline=MEMBERSHIP_DEADLINE)
        if channels and user_id
        else _nothing(),
        creating.may_create(runtime, user_id, team_id),
    )

    def visible(channel: str) -> bool:
        return may_list_watch(channel, asked_in="", asker_is_member=members.get(channel))

    watches = [
        HomeWatch(
            subscription_id=sub.id,
            gid=sub.export_gid,
            organization_name=row.organization_name,
            state=row.state,
            channel_id=sub.channel_id,
            user_id=sub.user_id,
            since=sub.created_at,
            next_check_at=row.next_poll_at,
        )
        for sub, row in pairs
        if visible(sub.channel_id)
    ]
    lines = [scheduling.schedule_line(r, now) for r in schedules if visible(r.channel_id)]
    seen = [(sub, org) for sub, org in ended if visible(sub.channel_id)][:ENDED_SHOWN]
    # Hidden ends are counted only down to the oldest one shown (older ones are not listed anyway).
    oldest = seen[-1][0].id if len(seen) == ENDED_SHOWN else None
    scanned = ended if oldest is None else ended[: [s.id for s, _ in ended].index(oldest) + 1]
    gone = [
        EndedWatch(
            gid=sub.export_gid,
            organization_name=org,
            channel_id=sub.channel_id,
            user_id=sub.user_id,
            ended_at=sub.ended_at or now,
            end_reason=sub.end_reason,
        )
        for sub, org in seen
    ]
    withheld = (
        (len(pairs) - len(watches)) + (len(schedules) - len(lines)) + (len(scanned) - len(gone))
    )
    return HomeContent(
        watches=watches,
        schedules=lines,
        ended=gone,
        archives=await archive_summaries(
            runtime, {w.gid for w in watches} | {sub.export_gid for sub, _ in seen}
        ),
        withheld=withheld,
        may_create=bool(verdict),
        notice=notice,
    )


async def _nothing() -> dict[str, bool | None]:
    return {}


async def publish(
    runtime: Runtime, *, team_id: str, user_id: str, notice: str | None = None
) -> slack_out.SlackResult:
    """Render and publish `user_id`'s home (after an open or a click), through the notifier."""
    home = await content(runtime, team_id=team_id, user_id=user_id, notice=notice)
    view = messages.render_home(home, now=runtime.now(), command=runtime.settings.SLACK_COMMAND)
    result = await runtime.notify.publish_home(user_id, view.to_view())
    if result.ok:
        log.info(
            "published the home of user %s: %d watches, %d schedules, %d withheld",
            user_id[:20],
            len(home.watches),
            len(home.schedules),
            home.withheld,
        )
    return result


def parse_id(value: Any) -> int | None:
    """A button's value as a row id (a forged value is None)."""
    if isinstance(value, str) and _ID.fullmatch(value):
        return int(value)
    return None


async def unwatch(runtime: Runtime, value: Any, *, team_id: str, user_id: str) -> str:
    """The Unwatch button: its requester, a member of its channel or an admin ends the watch."""
    sub_id = parse_id(value)
    if sub_id is None:
        return messages.stale_button_notice()
    found = await subscription(runtime, sub_id)
    if found is None or found[0].team_id != team_id or found[0].ended_at is not None:
        return messages.unwatch_notice(None, None, "not_found")
    sub, _ = found
    if not runtime.settings.allows(user_id, sub.channel_id):
        return messages.render_refused(what="stop this watch").text
    allowed = sub.user_id == user_id
    if not allowed:
        allowed = await slack_org.is_member(runtime.slack, sub.channel_id, user_id) is True
    if not allowed:
        allowed = await creating.may_create(runtime, user_id, team_id) is True
    if not allowed:
        log.warning("refused an unwatch of subscription %s to user %s", sub.id, user_id[:20])
        return messages.unwatch_notice(sub.export_gid, sub.channel_id, "not_allowed")
    ended = await runtime.store.unwatch(
        team_id=team_id, channel_id=sub.channel_id, gid=sub.export_gid, now=runtime.now()
    )
    if ended is None:
        return messages.unwatch_notice(None, None, "not_found")
    log.info("user %s stopped channel %s watching %s", user_id[:20], sub.channel_id, sub.export_gid)
    await runtime.notify.mark_unwatched(ended)
    audit.stopped_watching(runtime, ended, user_id=user_id, via="button")
    return messages.unwatch_notice(sub.export_gid, sub.channel_id, "stopped")


async def remove_schedule(runtime: Runtime, value: Any, *, team_id: str, user_id: str) -> str:
    """The Remove button of a schedule: `unschedule`'s rules (its creator or an admin)."""
    schedule_id = parse_id(value)
    if schedule_id is None:
        return messages.stale_button_notice()
    answer = await scheduling.remove_schedule(
        runtime, schedule_id, team_id=team_id, user_id=user_id
    )
    return answer.text


async def new_export_clicked(
    runtime: Runtime, trigger_id: str, *, team_id: str, user_id: str
) -> str | None:
    """The "New export" button: admins get the modal (None); anyone else a notice why not."""
    verdict = await creating.may_create(runtime, user_id, team_id)
    if not verdict:
        log.warning("refused the New export modal to user %s (%s)", user_id[:20], verdict)
        admins = sorted(runtime.settings.admin_users)
        return messages.render_not_admin(admins, unknown=verdict is None).text
    modal = messages.render_new_export_modal(runtime.settings.ASANA_ORGANIZATION_GID or None)
    result = await runtime.notify.open_modal(trigger_id, modal.to_view())
    if not result.ok:
        return messages.render_internal_error().text
    return None


@dataclass(frozen=True, slots=True)
class NewExport:
    """A valid submission of the modal: which organization, watched in which channel."""

    organization_gid: str
    channel_id: str
    view_id: str


def _input(view: Mapping[str, Any], where: tuple[str, str]) -> Mapping[str, Any]:
    state = view.get("state")
    values = state.get("values") if isinstance(state, Mapping) else None
    block = values.get(where[0]) if isinstance(values, Mapping) else None
    found = block.get(where[1]) if isinstance(block, Mapping) else None
    return found if isinstance(found, Mapping) else {}


async def check_submission(
    runtime: Runtime, view: Mapping[str, Any], *, team_id: str, user_id: str
) -> NewExport | dict[str, str]:
    """The modal's inputs, validated; or the errors to show in it (block_id -> message)."""
    org_block, channel_block = messages.ORG_INPUT[0], messages.CHANNEL_INPUT[0]
    typed = _input(view, messages.ORG_INPUT).get("value")
    org_text = typed.strip() if isinstance(typed, str) else ""
    org_text = org_text or runtime.settings.ASANA_ORGANIZATION_GID
    channel = _input(view, messages.CHANNEL_INPUT).get("selected_conversation")
    errors: dict[str, str] = {}
    parsed = parse_command(f"new {org_text}") if org_text else None
    if not org_text:
        errors[org_block] = "Name the organization: its gid is a number."
    elif not isinstance(parsed, New) or parsed.force or parsed.org_gid is None:
        problem = getattr(parsed, "problem", "That is not an organization gid: a gid is a number.")
        errors[org_block] = str(problem).replace("`", "")[:150]
    if not isinstance(channel, str) or not _CHANNEL.fullmatch(channel):
        errors[channel_block] = "Pick the channel to watch the export in."
    elif not runtime.settings.allows(user_id, channel):
        errors[channel_block] = "This bot is not allowed in that channel (ALLOWED_CHANNELS)."
    if errors:
        return errors
    assert isinstance(channel, str) and isinstance(parsed, New) and parsed.org_gid
    info, verdict = await asyncio.gather(
        slack_out.channel_info(runtime.slack, channel),
        creating.may_create(runtime, user_id, team_id),
    )
    if not verdict:
        errors[org_block] = (
            "Slack would not say whether you are an admin; try again in a minute."
            if verdict is None
            else "Only admins may start an export of a whole organization."
        )
    if info is None or not info.get("is_member", True):
        errors[channel_block] = "I am not in that channel: invite me with /invite, then try again."
    elif info.get("is_archived"):
        errors[channel_block] = "That channel is archived."
    if errors:
        return errors
    return NewExport(parsed.org_gid, channel, str(view.get("id") or ""))


async def start_new_export(
    runtime: Runtime, request: NewExport, *, team_id: str, user_id: str, trigger_id: str
) -> str:
    """Start the export as `new` does and watch it in the chosen channel; the outcome's text."""
    key = creating.request_key(
        team_id=team_id,
        user_id=user_id,
        channel_id=request.channel_id,
        text=f"home new {request.organization_gid}",
        # One modal submits once: its view id is the nonce (a resubmission is the same request).
        trigger_id=f"view:{request.view_id}" if request.view_id else trigger_id,
        timestamp="",
    )
    answer = await creating.new_for_person(
        runtime,
        org_gid=request.organization_gid,
        force=False,
        team_id=team_id,
        channel_id=request.channel_id,
        user_id=user_id,
        key=key,
    )
    return answer.text
