"""Where a watched export came from, as its status card says it on every edit (issue 11).

An export that a schedule's occurrence started carries the schedule on its card, in the
schedule's own words, with the run it belongs to and whether that run was late; a watch a
person asked for has no origin line. The line replaces the separate "schedule started" post:
the card is the one message that stays current.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.messages.blocks import Block, context
from bot.messages.mrkdwn import esc
from bot.messages.timefmt import format_absolute

#: A spec as people type it, or a time zone name: short foreign strings.
_SPEC_BUDGET = 120


@dataclass(frozen=True, slots=True)
class CardOrigin:
    """The schedule occurrence that started an export: which schedule, which run, how late."""

    schedule_id: int
    when: str
    timezone: str
    occurrence_at: datetime
    late: bool = False
    #: How many occurrences this run stands for (missed ones coalesce into one late run).
    coalesced: int = 1


def origin_line(origin: CardOrigin) -> str:
    """ ":calendar: From schedule #3 · weekly mon 02:00 Europe/Berlin · the run of ..."."""
    line = (
        f":calendar: From schedule #{origin.schedule_id} · {esc(origin.when, _SPEC_BUDGET)}"
        f" {esc(origin.timezone, 64)} · the run of {format_absolute(origin.occurrence_at)}"
    )
    if not origin.late:
        return line
    missed = (
        f" (it stands for {origin.coalesced} occurrences missed while the bot was down)"
        if origin.coalesced > 1
        else ""
    )
    return f"{line} · :hourglass: late{missed}"


def origin_block(origin: CardOrigin | None) -> Block | None:
    """The card's origin line as a context block; None for a watch a person asked for."""
    return None if origin is None else context(origin_line(origin))


def origin_text(origin: CardOrigin | None) -> str:
    """What the fallback text adds (notifications show it): "From schedule #3 (late)."."""
    if origin is None:
        return ""
    return f" From schedule #{origin.schedule_id}{' (late)' if origin.late else ''}."
