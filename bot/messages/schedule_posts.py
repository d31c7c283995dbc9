"""What a schedule's occurrence posts in its channel: resumed, retried out, paused, unknown.

A run that started an export posts nothing of its own: the export's card says which schedule
and run it came from, and whether it was late (`bot.messages.origin`).
"""

from __future__ import annotations

from datetime import datetime

from bot.messages.blocks import Message, context, message, section
from bot.messages.creating import refusal_parts
from bot.messages.mrkdwn import code, command_text
from bot.messages.parts import DEFAULT_COMMAND
from bot.messages.timefmt import format_absolute, format_duration
from bot.models import ProblemKind


def render_schedule_resumed(schedule_id: int, export_gid: str) -> Message:
    """In channel, once: a paused schedule's run worked, so it runs again (the card follows,
    and says which schedule and run it came from)."""
    text = (
        f":arrow_forward: Schedule #{schedule_id} runs again: Asana accepted this run and"
        f" started export {code(export_gid)}. Its card follows."
    )
    return message(text, [section(text)], "in_channel")


def render_schedule_failed(
    schedule_id: int,
    kind: ProblemKind,
    *,
    occurrence_at: datetime,
    organization_gid: str,
    gave_up_after: float | None = None,
) -> Message:
    """In channel, once: this run started no export (Asana said no, or kept saying "not now")."""
    what, todo = refusal_parts(
        kind,
        f"organization {code(organization_gid)}",
        None,
    )
    tried = (
        f" I kept trying for {format_duration(gave_up_after)}." if gave_up_after is not None else ""
    )
    head = (
        f":warning: Schedule #{schedule_id}: the run of {format_absolute(occurrence_at)} started"
        f" no export. {what}{tried}"
    )
    return message(f"{head} {todo}", [section(head), context(todo)], "in_channel")


def render_schedule_paused(
    schedule_id: int, kind: ProblemKind, *, organization_gid: str, command: str = DEFAULT_COMMAND
) -> Message:
    """In channel, once: Asana refused for a reason only a person can fix; the schedule pauses."""
    what, todo = refusal_parts(
        kind,
        f"organization {code(organization_gid)}",
        None,
    )
    head = (
        f":double_vertical_bar: Schedule #{schedule_id} is paused: {what} {todo} It keeps trying"
        " at its next occurrences and runs again as soon as one works."
    )
    foot = f"`{command_text(command)} unschedule {schedule_id}` removes it."
    return message(head, [section(head), context(foot)], "in_channel")


def render_schedule_unknown(schedule_id: int, *, occurrence_at: datetime) -> Message:
    """In channel: the request may have reached Asana and no answer came; never repeated."""
    text = (
        f":grey_question: Schedule #{schedule_id}: I asked Asana for the run of"
        f" {format_absolute(occurrence_at)}, but its answer never came, so I do not know whether"
        " an export was started. I will not ask again for this run (a second request could"
        " start a second export); the next occurrence runs as usual."
    )
    return message(text, [section(text)], "in_channel")
