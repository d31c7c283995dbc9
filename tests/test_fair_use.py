"""Fair use arithmetic (bot/fair_use.py), driven by a fake clock: polling's reserved share,
bounded debt, per-user limits and their bounded memory."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.fair_use import FairUse, Limit, UserLimiter
from bot.ratelimit import WINDOW, TokenBucket
from tests.test_ratelimit import FakeClock


def _fair(
    rate: float, share: float, per_user: float = 1000, *, clock: FakeClock, max_users: int = 100
) -> FairUse:
    return FairUse(
        TokenBucket(rate, clock=clock),
        reserved_share=share,
        user_per_minute=per_user,
        clock=clock,
        max_users=max_users,
    )


def _in_window(events: list[float], now: float) -> int:
    return sum(1 for t in events if now - t < WINDOW)


@settings(max_examples=120, deadline=None)
@given(
    rate=st.integers(min_value=10, max_value=300),
    share=st.sampled_from([0.0, 0.25, 0.5, 0.75, 0.9]),
    steps=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=3.0), st.integers(0, 20), st.booleans()),
        min_size=1,
        max_size=200,
    ),
)
def test_people_never_take_more_than_their_share_and_debt_is_bounded(
    rate: int, share: float, steps: list[tuple[float, int, bool]]
) -> None:
    clock = FakeClock()
    fair = _fair(rate, share, clock=clock)
    people: list[float] = []
    for gap, requests, poll in steps:
        clock.advance(gap)
        for i in range(requests):
            if fair.admit(f"U{i:04d}") is None:
                people.append(clock.now)
        if poll:
            fair.budget.try_acquire()
        assert _in_window(people, clock.now) <= rate * (1 - share) + 1e-9
        assert fair.budget._tokens >= -fair.people.burst - 1e-9, "debt beyond the people's burst"


@pytest.mark.parametrize("share", [0.25, 0.5, 0.9])
def test_polls_keep_their_reserved_share_under_a_flood(share: float) -> None:
    """500 people knock every 0.1 s for 10 minutes; polls still get their share every minute."""
    clock = FakeClock()
    rate = 100
    fair = _fair(rate, share, clock=clock)
    polls: list[float] = []
    for _ in range(6000):
        clock.advance(0.1)
        for i in range(5):
            fair.admit(f"U{i}")
        while fair.budget.try_acquire():
            polls.append(clock.now)
    for minute in range(1, 10):
        start = 1000.0 + 60 * minute
        got = sum(1 for t in polls if start <= t < start + 60)
        assert got >= rate * share - 1, (minute, got)


def test_the_old_force_acquire_let_people_starve_polls() -> None:
    """Why the lane exists: forced acquisitions alone leave polls nothing under a flood."""
    clock = FakeClock()
    budget = TokenBucket(100, clock=clock)
    polls = 0
    for _ in range(600):
        clock.advance(0.1)
        budget.force_acquire(5)
        polls += budget.try_acquire()
    assert polls <= 1  # the one the full bucket had before the flood


def test_busy_answer_names_the_wait_and_waiting_it_is_enough() -> None:
    clock = FakeClock()
    fair = _fair(10, 0.5, clock=clock)  # people: 5 a minute, burst 1
    assert fair.admit("UA") is None
    refused = fair.admit("UB")
    assert refused is not None and refused.limit is Limit.BUSY
    assert refused.retry_after == 12  # one token of 5 a minute
    clock.advance(refused.retry_after)
    assert fair.admit("UB") is None


def test_refusals_take_nothing() -> None:
    clock = FakeClock()
    fair = _fair(10, 0.5, clock=clock)
    assert fair.admit("UA") is None
    before = fair.budget._tokens
    for _ in range(50):
        assert fair.admit("UB") is not None
    assert fair.budget._tokens == before
    assert fair.users.wait("UB") == 0, "a busy refusal does not count against the person"


def test_per_user_limit_is_per_person_with_its_wait() -> None:
    clock = FakeClock()
    fair = _fair(10_000, 0.5, per_user=3, clock=clock)
    assert [fair.admit("UA") for _ in range(3)] == [None] * 3
    refused = fair.admit("UA")
    assert refused is not None and refused.limit is Limit.USER
    assert 1 <= refused.retry_after <= 60
    assert fair.admit("UB") is None, "another person is not held back"
    clock.advance(refused.retry_after)
    assert fair.admit("UA") is None


@given(per_minute=st.integers(1, 30), gaps=st.lists(st.floats(0, 10), min_size=1, max_size=200))
@settings(max_examples=80, deadline=None)
def test_a_person_never_exceeds_the_limit_in_any_minute(per_minute: int, gaps: list[float]) -> None:
    clock = FakeClock()
    fair = _fair(100_000, 0.5, per_user=per_minute, clock=clock)
    admitted: list[float] = []
    for gap in gaps:
        clock.advance(gap)
        if fair.admit("UA") is None:
            admitted.append(clock.now)
            assert _in_window(admitted, clock.now) <= per_minute


def test_user_memory_is_bounded() -> None:
    clock = FakeClock()
    users = UserLimiter(5, clock=clock, max_users=100)
    for i in range(10_000):
        users.take(f"U{i}")
    assert len(users) == 100
    users.take("U9950")  # recently seen ones are kept...
    assert users.wait("U9950") == 0 and len(users) == 100


def test_settings_bounds() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError):
        _fair(100, 1.0, clock=clock)
    with pytest.raises(ValueError):
        UserLimiter(5, clock=clock, max_users=0)
    assert math.isclose(_fair(100, 0.5, clock=clock).people.rate_per_minute, 50)
