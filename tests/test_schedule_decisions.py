"""Is an occurrence due, is it late, retry or give up (bot/schedule_decisions.py, pure)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from bot.schedule_decisions import GiveUp, RetryAt, after_transient, due_occurrence, is_late
from bot.schedule_spec import ScheduleSpec

T0 = datetime(2030, 1, 6, 8, 0, 10, tzinfo=UTC)
MINUTELY = ScheduleSpec('cron "* * * * *"', "UTC").trigger()
DAILY = ScheduleSpec("daily 08:01", "Europe/Berlin").trigger()


def test_nothing_is_due_before_the_first_occurrence() -> None:
    assert due_occurrence(MINUTELY, since=T0, now=T0 + timedelta(seconds=49)) is None


def test_an_occurrence_is_due_once_its_time_has_come() -> None:
    due = due_occurrence(MINUTELY, since=T0, now=T0 + timedelta(seconds=50))
    assert due is not None
    assert (due.occurrence_at, due.late, due.coalesced) == (
        T0.replace(second=0) + timedelta(minutes=1),
        False,
        1,
    )
    # Claimed: `since` moves to it, and it is not due again.
    assert due_occurrence(MINUTELY, since=due.occurrence_at, now=due.occurrence_at) is None


def test_missed_occurrences_coalesce_into_the_newest_said_late() -> None:
    now = T0 + timedelta(minutes=10)
    due = due_occurrence(MINUTELY, since=T0, now=now)
    assert due is not None
    assert (due.occurrence_at, due.late, due.coalesced) == (now.replace(second=0), True, 10)


def test_one_occurrence_fired_long_after_its_time_is_late() -> None:
    occurrence = datetime(2030, 1, 6, 7, 1, tzinfo=UTC)  # 08:01 in Berlin
    due = due_occurrence(
        DAILY, since=T0 - timedelta(hours=2), now=occurrence + timedelta(minutes=5)
    )
    assert due is not None and due.occurrence_at == occurrence and due.late and due.coalesced == 1
    assert not is_late(occurrence, occurrence + timedelta(seconds=59))


def test_a_very_long_outage_of_a_minutely_schedule_is_walked_quickly() -> None:
    now = T0 + timedelta(days=30)
    due = due_occurrence(MINUTELY, since=T0, now=now)
    assert due is not None and due.occurrence_at == now.replace(second=0) and due.late


@given(st.integers(0, 5 * 24 * 3600), st.integers(0, 5 * 24 * 3600))
def test_the_due_occurrence_is_in_since_now_and_the_newest(a: int, b: int) -> None:
    since, now = T0 + timedelta(seconds=min(a, b)), T0 + timedelta(seconds=max(a, b))
    due = due_occurrence(MINUTELY, since=since, now=now)
    if due is None:
        assert now - since < timedelta(minutes=1)
        return
    assert since < due.occurrence_at <= now < due.occurrence_at + timedelta(minutes=1)


def test_transient_refusals_retry_inside_the_window_then_give_up() -> None:
    rng = random.Random(7)
    window = timedelta(seconds=3600)
    at = after_transient(
        attempts=1, occurrence_at=T0, now=T0, window=window, retry_after=None, rng=rng
    )
    assert isinstance(at, RetryAt) and T0 < at.at <= T0 + timedelta(seconds=10)
    honoured = after_transient(
        attempts=1, occurrence_at=T0, now=T0, window=window, retry_after=120, rng=rng
    )
    assert isinstance(honoured, RetryAt) and honoured.at >= T0 + timedelta(seconds=120)
    late = T0 + timedelta(seconds=3590)
    assert isinstance(
        after_transient(
            attempts=9, occurrence_at=T0, now=late, window=window, retry_after=None, rng=rng
        ),
        GiveUp,
    )
    assert isinstance(
        after_transient(
            attempts=1, occurrence_at=T0, now=T0, window=window, retry_after=7200, rng=rng
        ),
        GiveUp,
    )
