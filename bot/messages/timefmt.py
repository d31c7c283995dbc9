"""Times and durations as people read them: one zone (UTC), rounded, absolute plus relative."""

from __future__ import annotations

import math
from datetime import UTC, datetime


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def as_utc(dt: datetime) -> datetime:
    """Naive datetimes are taken to be UTC (that is what the store and Asana give us)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def format_duration(seconds: float) -> str:
    """A human duration rounded to the minute: "52 minutes", "2 hours 5 minutes", "3 days"."""
    minutes = round(abs(seconds) / 60) if math.isfinite(seconds) else 0
    if minutes < 60:
        return plural(minutes, "minute")
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return plural(hours, "hour") + (f" {plural(minutes, 'minute')}" if minutes else "")
    days, hours = divmod(hours, 24)
    return plural(days, "day") + (f" {plural(hours, 'hour')}" if hours else "")


def format_relative(dt: datetime, now: datetime) -> str:
    """ "just now", "3 minutes ago", "in 52 minutes", "2 days 1 hour ago"."""
    delta = (as_utc(now) - as_utc(dt)).total_seconds()
    if abs(delta) < 45:
        return "just now"
    span = format_duration(delta)
    return f"{span} ago" if delta > 0 else f"in {span}"


def format_absolute(dt: datetime) -> str:
    """ "2026-11-27 14:05 UTC": one unambiguous zone for a team spread over several."""
    d = as_utc(dt)  # not strftime: several per card, and it costs several times this
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d} {d.hour:02d}:{d.minute:02d} UTC"


def format_timestamp(dt: datetime, now: datetime) -> str:
    """Absolute UTC plus relative: "2026-11-27 14:05 UTC (3 minutes ago)"."""
    return f"{format_absolute(dt)} ({format_relative(dt, now)})"


def format_seconds(seconds: float | None) -> str | None:
    """ "12 s", "1.5 s", "about 3 minutes"; None when unknown or nonsensical."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    if seconds < 10:
        return f"{math.ceil(seconds * 10) / 10:g} s"
    if seconds < 120:
        return f"{math.ceil(seconds)} s"
    return f"about {format_duration(seconds)}"
