"""What the bot says about recurring exports: scheduled, the list, removed, bad specs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from bot.messages.blocks import Block, Message, context, header, message, notice, section
from bot.messages.mrkdwn import (
    PROBLEM_BUDGET,
    channel_mention,
    code,
    command_text,
    esc,
    user_mention,
)
from bot.messages.parts import DEFAULT_COMMAND
from bot.messages.timefmt import as_utc, format_absolute, format_relative
from bot.messages.watches import MAX_LIST_ROWS, line_sections

#: A spec as people type it, or a time zone name: short foreign strings.
_SPEC_BUDGET = 120


@dataclass(frozen=True, slots=True)
class ScheduleLine:
    """One schedule as the list shows it."""

    id: int
    when: str
    timezone: str
    organization_gid: str
    channel_id: str
    created_by: str
    next_at: datetime | None
    paused_reason: str | None = None


def _local(dt: datetime) -> str:
    """ "Mon 2026-11-30 02:00 CET": the schedule's own zone, weekday first (people plan by it)."""
    return dt.strftime("%a %Y-%m-%d %H:%M ") + esc(dt.tzname() or "", 16)


def _when(when: str, timezone: str) -> str:
    return f"{code(when, _SPEC_BUDGET)} ({esc(timezone, 64)})"


def render_schedule_usage(problem: str | None, examples: Sequence[str], *, command: str) -> Message:
    """Ephemeral: the spec was not understood (why, quoting it escaped) and how to write one."""
    cmd = command_text(command)
    lines = [f"• `{cmd} schedule {esc(e, _SPEC_BUDGET)}`" for e in examples]
    lead = (
        f":warning: That is not a schedule: {esc(problem, PROBLEM_BUDGET)}."
        if problem
        else ":calendar: When should the export run?"
    )
    body = (
        "*Usage:* `schedule &lt;when&gt; [tz &lt;zone&gt;] [&lt;organization gid&gt;]`, where"
        " &lt;when&gt; is `daily HH:MM`, `weekly DAY HH:MM`, `monthly DAY-OF-MONTH HH:MM` or"
        ' `cron "m h dom mon dow"` (crontab: Sunday is 0).\n*Examples*\n' + "\n".join(lines)
    )
    return message(f"{lead} {body}", [section(lead), section(body)], "ephemeral")


def render_scheduled(
    schedule_id: int,
    *,
    when: str,
    timezone: str,
    organization_gid: str,
    occurrences: Sequence[tuple[datetime, datetime]],
    command: str = DEFAULT_COMMAND,
) -> Message:
    """In channel: a new schedule, its number, and its next occurrences (its zone, and UTC)."""
    head = (
        f":calendar: Schedule #{schedule_id}: an export of organization"
        f" {code(organization_gid)} {_when(when, timezone)}."
    )
    lines = [f"• {_local(local)} = {format_absolute(utc)}" for local, utc in occurrences]
    nexts = "*Next*\n" + "\n".join(lines) if lines else "It has no next occurrence."
    foot = (
        f"Each one is watched in this channel. `{command_text(command)} unschedule"
        f" {schedule_id}` stops it."
    )
    return message(f"{head} {nexts}", [section(head), section(nexts), context(foot)], "in_channel")


def _line(row: ScheduleLine, now: datetime, scope: str) -> str:
    parts = [f"*#{row.id}* {_when(row.when, row.timezone)}", f"org {code(row.organization_gid)}"]
    if scope == "workspace":
        parts.append(f"in {channel_mention(row.channel_id) or code(row.channel_id)}")
    parts.append(f"by {user_mention(row.created_by) or code(row.created_by)}")
    if row.paused_reason:
        parts.append(f":double_vertical_bar: paused: {esc(row.paused_reason, PROBLEM_BUDGET)}")
    elif row.next_at is not None:
        parts.append(f"next {format_absolute(row.next_at)} ({format_relative(row.next_at, now)})")
    else:
        parts.append("no next occurrence")
    return "• " + ", ".join(parts)


def render_schedule_list(
    rows: Sequence[ScheduleLine],
    *,
    now: datetime,
    scope: Literal["channel", "workspace"],
    command: str = DEFAULT_COMMAND,
    withheld: int = 0,
) -> Message:
    """Ephemeral list of schedules; those of channels the asker is not in are counted only."""
    where = "this channel" if scope == "channel" else "this workspace"
    title = header(f"Scheduled exports in {where}")
    note = (
        context(
            f"{withheld} more {'schedule is' if withheld == 1 else 'schedules are'} not shown:"
            " they are in channels you are not a member of."
        )
        if withheld
        else None
    )
    if not rows:
        text = (
            f"No exports are scheduled in {where}"
            + (" that you can see" if withheld else "")
            + f". Use `{command_text(command)} schedule weekly mon 02:00` to start one."
        )
        return message(text, [title, section(text), note], "ephemeral")
    ordered = sorted(rows, key=lambda r: (r.next_at is None, r.next_at and as_utc(r.next_at), r.id))
    sections, placed = line_sections([_line(r, now, scope) for r in ordered[:MAX_LIST_ROWS]])
    blocks: list[Block | None] = [title, *sections]
    if len(rows) > placed:
        blocks.append(context(f"…and {len(rows) - placed} more."))
    blocks.append(note)
    count = f"{len(rows)} schedule{'s' if len(rows) != 1 else ''}"
    return message(f"{count} in {where}.", blocks, "ephemeral")


def render_unscheduled(
    schedule_id: int, outcome: Literal["removed", "not_found", "not_allowed"]
) -> Message:
    """Ephemeral: what `unschedule <id>` did."""
    match outcome:
        case "removed":
            return notice(
                f":wastebasket: Schedule #{schedule_id} is removed; no more exports will start"
                " from it (exports already started are still watched)."
            )
        case "not_allowed":
            return notice(
                f":lock: Only the person who created schedule #{schedule_id}, or an admin, may"
                " remove it."
            )
    return notice(f":grey_question: There is no schedule #{schedule_id} in this workspace.")
