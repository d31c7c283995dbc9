"""`schedule <when>` parsing and next-fire computation (bot/schedule_spec.py, pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.schedule_spec import (
    USAGE_EXAMPLES,
    ScheduleSpec,
    SpecError,
    next_after,
    next_occurrences,
    parse_schedule,
)

# A Sunday.
NOW = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def _spec(text: str, tz: str = "UTC") -> ScheduleSpec:
    spec = parse_schedule(text, default_timezone=tz)
    assert isinstance(spec, ScheduleSpec), spec
    return spec


def _utc(spec: ScheduleSpec, after: datetime = NOW) -> list[datetime]:
    return [o.utc for o in next_occurrences(spec, after=after)]


def test_daily_fires_every_day_at_that_time() -> None:
    spec = _spec("daily 03:30")
    assert (spec.when, spec.timezone, spec.organization_gid) == ("daily 03:30", "UTC", None)
    assert _utc(spec) == [datetime(2026, 11, d, 3, 30, tzinfo=UTC) for d in (30,)] + [
        datetime(2026, 12, d, 3, 30, tzinfo=UTC) for d in (1, 2)
    ]


def test_weekly_in_a_timezone_shows_local_and_utc_times() -> None:
    spec = _spec("weekly Monday 2:00 tz Europe/Berlin")
    assert (spec.when, spec.timezone) == ("weekly mon 02:00", "Europe/Berlin")
    found = next_occurrences(spec, after=NOW)
    assert [o.local.strftime("%a %Y-%m-%d %H:%M") for o in found] == [
        "Mon 2026-11-30 02:00",
        "Mon 2026-12-07 02:00",
        "Mon 2026-12-14 02:00",
    ]
    assert found[0].utc == datetime(2026, 11, 30, 1, 0, tzinfo=UTC)  # CET is UTC+1


def test_monthly_and_the_org_gid_in_any_order() -> None:
    spec = _spec("monthly 1 02:00 1200000000000001 tz America/New_York")
    assert (spec.when, spec.timezone, spec.organization_gid) == (
        "monthly 1 02:00",
        "America/New_York",
        "1200000000000001",
    )
    assert [o.local.day for o in next_occurrences(spec, after=NOW)] == [1, 1, 1]


def test_the_default_timezone_is_the_setting() -> None:
    assert _spec("daily 09:00", tz="Asia/Tokyo").timezone == "Asia/Tokyo"


def test_cron_weekday_numbers_are_crontab_s_sunday_is_zero() -> None:
    # APScheduler 3 alone would read 1 as Tuesday; a person who writes 1 means Monday.
    mondays = _utc(_spec('cron "0 2 * * 1"'))
    assert [d.strftime("%a %H:%M") for d in mondays] == ["Mon 02:00"] * 3
    sundays = _spec('cron "0 2 * * 0,7"')
    assert {d.strftime("%a") for d in _utc(sundays)} == {"Sun"}
    weekend = _spec('cron "30 6 * * 6-7"')
    assert {d.strftime("%a") for d in _utc(weekend, NOW + timedelta(days=5))} == {"Sat", "Sun"}
    every_other = _spec('cron "0 0 * * */2"')  # crontab: Sun, Tue, Thu, Sat
    days = {o.utc.strftime("%a") for o in next_occurrences(every_other, after=NOW, count=7)}
    assert days == {"Sun", "Tue", "Thu", "Sat"}
    names = _spec('cron "0 2 * * mon-fri"')
    assert {o.utc.strftime("%a") for o in next_occurrences(names, after=NOW, count=5)} == {
        "Mon",
        "Tue",
        "Wed",
        "Thu",
        "Fri",
    }


def test_smart_quotes_from_slack_and_no_quotes_at_all() -> None:
    assert _spec("cron \u201c0 2 * * 1\u201d").when == 'cron "0 2 * * 1"'
    assert _spec("cron 0 2 * * 1 tz UTC").when == 'cron "0 2 * * 1"'


def test_occurrences_are_strictly_after_now() -> None:
    spec = _spec("daily 08:00")
    assert _utc(spec)[0] == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    assert next_after(spec, NOW - timedelta(seconds=1)) == NOW


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "say when"),
        ("hourly 03:00", "daily, weekly, monthly or cron"),
        ("daily", "needs more"),
        ("daily 24:00", "time of day"),
        ("daily 3pm", "time of day"),
        ("weekly funday 02:00", "day of the week"),
        ("monthly 32 02:00", "day of the month"),
        ('cron "0 2 * *"', "5 fields"),
        ("cron 0 2 * *", "5 fields"),
        ('cron "0 2 * * 8"', "day of the week"),
        ('cron "61 2 * * 1"', "APScheduler refused"),
        ('cron "0 0 31 2 *"', "never happens"),
        ('cron "0 2 * * 1', "quote"),
        ("daily 03:00 tz Mars/Olympus", "time zone"),
        ("daily 03:00 tz ../../etc/passwd", "time zone"),
        ("daily 03:00 please", "not understood"),
        ("daily 03:00 " + "x" * 300, "longer than"),
    ],
)
def test_bad_specs_say_why(text: str, says: str) -> None:
    result = parse_schedule(text)
    assert isinstance(result, SpecError)
    assert says in result.reason


@pytest.mark.parametrize("example", USAGE_EXAMPLES)
def test_every_usage_example_parses(example: str) -> None:
    assert isinstance(parse_schedule(example), ScheduleSpec)


@given(st.text(max_size=120))
def test_never_raises_always_typed(text: str) -> None:
    assert isinstance(parse_schedule(text), ScheduleSpec | SpecError)


_WORDS = st.sampled_from(
    [
        "daily",
        "weekly",
        "monthly",
        "cron",
        "mon",
        "1",
        "31",
        "last",
        "02:00",
        "tz",
        "UTC",
        '"0 2 * * 1"',
        '"*/5 * * * */2"',
        "Europe/Berlin",
        "123",
        "7-0",
        '"',
        "\u201c",
    ]
)


@given(st.lists(_WORDS, max_size=6), st.datetimes(timezones=st.just(UTC)))
def test_valid_specs_round_trip_and_fire_in_order(words: list[str], now: datetime) -> None:
    result = parse_schedule(" ".join(words))
    assert isinstance(result, ScheduleSpec | SpecError)
    if isinstance(result, SpecError):
        return
    again = parse_schedule(
        " ".join([result.when, "tz", result.timezone, result.organization_gid or ""])
    )
    assert again == result
    times = [o.utc for o in next_occurrences(result, after=now)]
    assert times == sorted(set(times))
    assert all(t > now for t in times)
