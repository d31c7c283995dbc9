"""The schedule commands: `schedule <when>`, `schedules [all]`, `unschedule <id>`.

Creating or removing a schedule is as privileged as `new` (it starts exports of a whole
organization, for ever): the same admin rule (`creating.may_create`), except that a schedule's
creator may always remove their own. The workspace list follows `list all`'s privacy rule.
Firing the occurrences is not this module's job.
"""

from __future__ import annotations

import logging
from datetime import datetime

from bot import audit, messages, slack_org
from bot.access import may_list_watch
from bot.creating import may_create
from bot.messages import Message, ScheduleLine
from bot.runtime import Runtime
from bot.schedule_spec import (
    USAGE_EXAMPLES,
    ScheduleSpec,
    SpecError,
    next_after,
    next_occurrences,
    parse_schedule,
)
from bot.store import ScheduleRow

log = logging.getLogger(__name__)

#: How long `schedules all` waits for Slack's membership answers: the list is the ack itself.
MEMBERSHIP_DEADLINE = 1.5


def spec_of(row: ScheduleRow) -> ScheduleSpec:
    """The stored schedule as a spec (its text was parsed when it was created)."""
    return ScheduleSpec(row.trigger_text, row.timezone, row.organization_gid)


async def create_schedule(
    runtime: Runtime, text: str, *, team_id: str, channel_id: str, user_id: str
) -> Message:
    """`schedule <when> [tz ZONE] [org_gid]`: authorize, parse, store, answer with what comes."""
    settings = runtime.settings
    command = settings.SLACK_COMMAND
    spec = parse_schedule(text, default_timezone=settings.SCHEDULE_TIMEZONE)
    if isinstance(spec, SpecError):
        problem = spec.reason if text.strip() else None
        return messages.render_schedule_usage(problem, USAGE_EXAMPLES, command=command)
    verdict = await may_create(runtime, user_id, team_id)
    if not verdict:
        log.warning("refused `schedule` to user %s (not an admin: %s)", user_id[:20], verdict)
        return messages.render_not_admin(sorted(settings.admin_users), unknown=verdict is None)
    organization = spec.organization_gid or settings.ASANA_ORGANIZATION_GID
    if not organization:
        return messages.render_no_organization(command)
    now = runtime.now()
    row = await runtime.store.add_schedule(
        team_id=team_id,
        channel_id=channel_id,
        organization_gid=organization,
        trigger_text=spec.when,
        timezone=spec.timezone,
        created_by=user_id,
        now=now,
    )
    log.info(
        "schedule %s: %s (%s) of organization %s in channel %s",
        row.id,
        spec.when,
        spec.timezone,
        organization,
        channel_id[:20],
    )
    audit.created_schedule(
        runtime,
        row.id,
        user_id=user_id,
        channel_id=channel_id,
        summary=f"{spec.when} ({spec.timezone}), organization {organization}",
    )
    return messages.render_scheduled(
        row.id,
        when=spec.when,
        timezone=spec.timezone,
        organization_gid=organization,
        occurrences=[(o.local, o.utc) for o in next_occurrences(spec, after=now)],
        command=command,
    )


def schedule_line(row: ScheduleRow, now: datetime) -> ScheduleLine:
    """A schedule as lists show it (`schedules`, the App Home), with its next occurrence."""
    return ScheduleLine(
        id=row.id,
        when=row.trigger_text,
        timezone=row.timezone,
        organization_gid=row.organization_gid,
        channel_id=row.channel_id,
        created_by=row.created_by,
        next_at=next_after(spec_of(row), now),
        paused_reason=row.paused_reason,
    )


async def list_schedules(
    runtime: Runtime, *, team_id: str, channel_id: str | None, asked_in: str, user_id: str
) -> Message:
    """This channel's schedules, or (channel_id None) the workspace's that the asker may see."""
    rows = await runtime.store.list_schedules(team_id, channel_id)
    withheld = 0
    if channel_id is None:
        elsewhere = [r.channel_id for r in rows if r.channel_id != asked_in]
        members = (
            await slack_org.memberships(
                runtime.slack, elsewhere, user_id, deadline=MEMBERSHIP_DEADLINE
            )
            if elsewhere and user_id
            else {}
        )
        visible = [
            r
            for r in rows
            if may_list_watch(
                r.channel_id, asked_in=asked_in, asker_is_member=members.get(r.channel_id)
            )
        ]
        withheld, rows = len(rows) - len(visible), visible
    now = runtime.now()
    lines = [schedule_line(r, now) for r in rows]
    return messages.render_schedule_list(
        lines,
        now=now,
        scope="channel" if channel_id else "workspace",
        command=runtime.settings.SLACK_COMMAND,
        withheld=withheld,
    )


async def remove_schedule(
    runtime: Runtime, schedule_id: int, *, team_id: str, user_id: str
) -> Message:
    """`unschedule <id>`: its creator or an admin ends it (a schedule of another workspace, or
    one already ended, is "not found")."""
    row = await runtime.store.schedule(schedule_id)
    if row is None or row.team_id != team_id or row.ended_at is not None:
        return messages.render_unscheduled(schedule_id, "not_found")
    if row.created_by != user_id and not await may_create(runtime, user_id, team_id):
        log.warning("refused `unschedule %s` to user %s", schedule_id, user_id[:20])
        return messages.render_unscheduled(schedule_id, "not_allowed")
    await runtime.store.end_schedule(
        schedule_id, now=runtime.now(), reason=f"removed by {user_id[:20]}"
    )
    log.info("schedule %s removed by user %s", schedule_id, user_id[:20])
    return messages.render_unscheduled(schedule_id, "removed")
