"""`schedule <when> [tz ZONE] [org_gid]`: the words a person types -> an APScheduler CronTrigger.

Pure: no I/O, the clock is passed in. APScheduler's `CronTrigger` does the cron work (field
parsing, next fire time, daylight-saving gaps); this module only maps the four shapes people
type (`daily 03:30`, `weekly mon 02:00`, `monthly 1 02:00`, `cron "0 2 * * 1"`) onto it, and
never raises on any input: a bad spec is a `SpecError` the usage answer can show.

One translation is needed: APScheduler 3.x numbers weekdays from Monday = 0, while crontab
numbers them from Sunday = 0 (its documented "historical mistake"). A person who writes
`cron "0 2 * * 1"` means Monday, so numeric weekdays are turned into names before APScheduler
sees them.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

#: Longest `<when>` text looked at; anything longer is refused before parsing.
MAX_SPEC_CHARS = 200
#: How many occurrences an answer shows.
SHOWN_OCCURRENCES = 3

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_WORDS = {
    **{d: d for d in DAYS},
    "monday": "mon",
    "tuesday": "tue",
    "wednesday": "wed",
    "thursday": "thu",
    "friday": "fri",
    "saturday": "sat",
    "sunday": "sun",
}
#: crontab's weekday numbers (0 and 7 are Sunday) -> APScheduler's names.
_CRON_DAY = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")

_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_ORG_GID = re.compile(r"^\d{1,32}$")
_DOW_ITEM = re.compile(r"^(?:(\*)|(\d+)(?:-(\d+))?)(?:/(\d+))?$")
_ONE_SECOND = timedelta(seconds=1)
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})

USAGE_EXAMPLES = (
    "daily 03:30",
    "weekly mon 02:00",
    "monthly 1 02:00",
    'cron "0 2 * * 1" tz Europe/Berlin',
    "weekly fri 18:00 tz America/New_York 1200000000000001",
)


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A valid schedule: its canonical text, the timezone it is read in, and the organization.

    `when` is stored as is and turned back into a trigger with `trigger()`, so what the database
    keeps is exactly what the person can read.
    """

    when: str
    timezone: str
    organization_gid: str | None = None

    def trigger(self) -> CronTrigger:
        """The APScheduler trigger (valid by construction: `parse_schedule` built it once)."""
        result = build_trigger(self.when, self.timezone)
        if isinstance(result, SpecError):  # pragma: no cover - parse_schedule checked it
            raise ValueError(result.reason)
        return result


@dataclass(frozen=True, slots=True)
class SpecError:
    """Why the text is not a schedule, in words for the person who typed it."""

    reason: str


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One fire time, as the schedule's timezone reads it and in UTC."""

    local: datetime
    utc: datetime


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _cron_weekdays(field: str) -> str | SpecError:
    """crontab's weekday field -> the same days in APScheduler's words (names, no numbers)."""
    out: list[str] = []
    for item in field.split(","):
        lowered = item.lower()
        if not any(ch.isdigit() for ch in lowered):
            out.append(lowered)  # names (mon, mon-fri) and `*` mean the same to both
            continue
        match = _DOW_ITEM.match(lowered)
        if match is None:
            return SpecError(f"`{item}` is not a day of the week")
        star, first, last, step = match.groups()
        start, stop = (0, 6) if star else (int(first), int(last if last is not None else first))
        if last is None and step is not None and not star:
            stop = 7
        if not (0 <= start <= 7 and 0 <= stop <= 7) or start > stop:
            return SpecError(f"`{item}` is not a day of the week (0-7, Sunday is 0 or 7)")
        stride = int(step) if step is not None else 1
        if stride < 1:
            return SpecError(f"`{item}` has a step of 0")
        out.extend(_CRON_DAY[n] for n in range(start, stop + 1, stride))
    # Keep the order of the week and drop repeats (0 and 7 are both Sunday).
    seen = [d for d in DAYS if d in out] + [d for d in out if d not in DAYS]
    return ",".join(dict.fromkeys(seen))


def build_trigger(when: str, timezone: str) -> CronTrigger | SpecError:
    """A canonical `when` (as `ScheduleSpec.when` keeps it) in `timezone` -> its CronTrigger."""
    zone = _zone(timezone)
    if zone is None:
        return SpecError(f"`{timezone}` is not a time zone I know (try Europe/Berlin or UTC)")
    try:
        words = shlex.split(when)
    except ValueError:
        return SpecError("a quote is not closed")
    if not words:
        return SpecError("say when")
    kind, args = words[0].lower(), words[1:]
    try:
        if kind == "cron":
            if len(args) != 1:
                return SpecError('put the cron expression in quotes: cron "0 2 * * 1"')
            fields = args[0].split()
            if len(fields) != 5:
                return SpecError(f"a cron expression has 5 fields, this one has {len(fields)}")
            days = _cron_weekdays(fields[4])
            if isinstance(days, SpecError):
                return days
            minute, hour, day, month, _ = fields
            return CronTrigger(
                minute=minute, hour=hour, day=day, month=month, day_of_week=days, timezone=zone
            )
        *lead, at = args or [""]
        time = _TIME.match(at)
        if time is None:
            return SpecError(f"`{at}` is not a time of day (HH:MM, 24-hour)")
        hour, minute = int(time.group(1)), int(time.group(2))
        if kind == "daily" and not lead:
            return CronTrigger(hour=hour, minute=minute, timezone=zone)
        if kind == "weekly" and len(lead) == 1:
            day = _DAY_WORDS.get(lead[0].lower())
            if day is None:
                return SpecError(f"`{lead[0]}` is not a day of the week (mon, tue, ... sun)")
            return CronTrigger(day_of_week=day, hour=hour, minute=minute, timezone=zone)
        if kind == "monthly" and len(lead) == 1:
            dom = lead[0].lower()
            if dom != "last" and not (dom.isdigit() and 1 <= int(dom) <= 31):
                return SpecError(f"`{lead[0]}` is not a day of the month (1-31 or last)")
            return CronTrigger(day=dom, hour=hour, minute=minute, timezone=zone)
    except ValueError as exc:
        return SpecError(f"APScheduler refused it: {str(exc)[:120]}")
    return SpecError("start with daily, weekly, monthly or cron")


def _canonical(words: list[str]) -> str:
    kind = words[0].lower()
    if kind == "cron":
        return f'cron "{" ".join(words[1].split())}"'
    if kind == "weekly":
        return f"weekly {_DAY_WORDS.get(words[1].lower(), words[1])} {_hhmm(words[2])}"
    if kind == "monthly":
        return f"monthly {words[1].lower()} {_hhmm(words[2])}"
    return f"daily {_hhmm(words[1])}"


def _hhmm(text: str) -> str:
    hour, minute = text.split(":")
    return f"{int(hour):02d}:{minute}"


_ARITY = {"daily": 2, "weekly": 3, "monthly": 3, "cron": 2}


def parse_schedule(text: str, *, default_timezone: str = "UTC") -> ScheduleSpec | SpecError:
    """`<when> [tz ZONE] [org_gid]` -> a schedule, or why not. Never raises."""
    if len(text) > MAX_SPEC_CHARS:
        return SpecError(f"that is longer than {MAX_SPEC_CHARS} characters")
    try:
        words = shlex.split(text.translate(_QUOTES))
    except ValueError:
        return SpecError("a quote is not closed")
    if not words:
        return SpecError("say when")
    arity = _ARITY.get(words[0].lower())
    if arity is None:
        return SpecError("start with daily, weekly, monthly or cron")
    if len(words) < arity:
        return SpecError(f"`{words[0]}` needs more: see the examples")
    if words[0].lower() == "cron" and len(words[1].split()) == 1:
        if len(words) < 6:
            return SpecError('a cron expression has 5 fields (in quotes: cron "0 2 * * 1")')
        words = [words[0], " ".join(words[1:6]), *words[6:]]  # the quotes were left out
    when_words, rest = words[:arity], words[arity:]
    timezone, organization = default_timezone, None
    while rest:
        word = rest.pop(0)
        if word.lower() == "tz" and rest:
            timezone = rest.pop(0)
        elif _ORG_GID.match(word) and organization is None:
            organization = word
        else:
            return SpecError(f"`{word[:40]}` is not understood here (tz ZONE, or an org gid)")
    if when_words[0].lower() != "cron" and _TIME.match(when_words[-1]) is None:
        return SpecError(f"`{when_words[-1][:40]}` is not a time of day (HH:MM, 24-hour)")
    if when_words[0].lower() == "cron" and len(when_words[1].split()) != 5:
        return SpecError(
            f"a cron expression has 5 fields, this one has {len(when_words[1].split())}"
            ' (put it in quotes: cron "0 2 * * 1")'
        )
    when = _canonical(when_words)
    trigger = build_trigger(when, timezone)
    if isinstance(trigger, SpecError):
        return trigger
    spec = ScheduleSpec(when=when, timezone=timezone, organization_gid=organization)
    if not next_occurrences(spec, after=datetime(2000, 1, 1, tzinfo=UTC), count=1, trigger=trigger):
        return SpecError("that never happens (no such date)")
    return spec


def next_occurrences(
    spec: ScheduleSpec,
    *,
    after: datetime,
    count: int = SHOWN_OCCURRENCES,
    trigger: CronTrigger | None = None,
) -> list[Occurrence]:
    """The next `count` fire times strictly after `after` (an aware datetime)."""
    trigger = trigger or spec.trigger()
    found: list[Occurrence] = []
    previous: datetime | None = None
    now = after
    while len(found) < count:
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None:
            break
        if fire <= after:  # APScheduler may return `now` itself: strictly after is wanted
            now = fire.replace(microsecond=0) + _ONE_SECOND
            continue
        found.append(Occurrence(local=fire, utc=fire.astimezone(UTC)))
        previous, now = fire, fire + _ONE_SECOND
    return found


def next_after(spec: ScheduleSpec, after: datetime) -> datetime | None:
    """The first fire time strictly after `after`, in UTC, or None if there is none."""
    found = next_occurrences(spec, after=after, count=1)
    return found[0].utc if found else None
