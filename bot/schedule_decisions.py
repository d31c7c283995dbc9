"""What a schedule's occurrence means: is one due, is it late, retry or give up (pure).

The clock is always an argument and the trigger is APScheduler's, so every decision here is a
function of its inputs; bot/schedule_firing.py does the I/O these decisions ask for.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from apscheduler.triggers.cron import CronTrigger

from bot.backoff import transient_retry_delay
from bot.models import ProblemKind

#: An occurrence fired more than this after its time is "late" (a replica was down): the post
#: says so. A few ticks of the schedule job, so a busy but healthy bot is never "late".
LATE_AFTER = timedelta(seconds=60)
#: Walking a trigger forward over a long outage: past this many steps, jump near `now`.
_MAX_STEPS = 2000


@dataclass(frozen=True, slots=True)
class Due:
    """The occurrence to fire now: the newest one not claimed yet (older missed ones coalesce
    into it), whether it is late (missed ones, or fired well after its time), and how many
    occurrences it stands for."""

    occurrence_at: datetime
    late: bool
    coalesced: int


def _next(trigger: CronTrigger, after: datetime) -> datetime | None:
    """The first fire time strictly after `after`."""
    fire = trigger.get_next_fire_time(None, after)
    while fire is not None and fire <= after:
        fire = trigger.get_next_fire_time(None, fire + timedelta(seconds=1))
    return fire


def due_occurrence(
    trigger: CronTrigger, *, since: datetime, now: datetime, late_after: timedelta = LATE_AFTER
) -> Due | None:
    """The occurrence to fire at `now`, or None when none fell in (since, now].

    `since` is the newest occurrence any replica claimed (or the schedule's creation time).
    Several missed occurrences (every replica was down) fire once: the newest, said late.
    """
    first = _next(trigger, since)
    if first is None or first > now:
        return None
    newest, count, steps = first, 1, 0
    while True:
        following = _next(trigger, newest)
        if following is None or following > now:
            break
        newest, count, steps = following, count + 1, steps + 1
        if steps >= _MAX_STEPS:  # a per-minute schedule after a long outage: jump ahead
            jump = _next(trigger, now - timedelta(days=1))
            if jump is None or jump <= newest or jump > now:
                continue
            newest, count, steps = jump, count + 1, 0
    late = count > 1 or is_late(newest, now, late_after)
    return Due(occurrence_at=newest, late=late, coalesced=count)


def is_late(occurrence_at: datetime, now: datetime, late_after: timedelta = LATE_AFTER) -> bool:
    """Whether a run fired at `now` is late enough to say so."""
    return now - occurrence_at > late_after


@dataclass(frozen=True, slots=True)
class RetryAt:
    """A transient refusal inside the window: try again at `at`."""

    at: datetime


@dataclass(frozen=True, slots=True)
class GiveUp:
    """A transient refusal past the window: post one failure message."""


def after_transient(
    *,
    attempts: int,
    occurrence_at: datetime,
    now: datetime,
    window: timedelta,
    retry_after: float | None,
    rng: random.Random,
) -> RetryAt | GiveUp:
    """Retry with backoff (Asana's Retry-After honoured) while the next try still falls inside
    `window` after the occurrence; otherwise give up."""
    delay = transient_retry_delay(attempts, retry_after=retry_after, rng=rng)
    at = now + timedelta(seconds=delay)
    if at > occurrence_at + window:
        return GiveUp()
    return RetryAt(at)


def is_transient(kind: ProblemKind) -> bool:
    """Asana said "not now" (or was not reached): nothing was created, asking again is safe."""
    return kind.is_transient


def needs_person(kind: ProblemKind) -> bool:
    """401, 402, 403: the schedule pauses until a later attempt works."""
    return kind.needs_person
