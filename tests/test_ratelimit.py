"""The per-token request budget, driven by a fake clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.ratelimit import WINDOW, RateLimitGate, TokenBucket


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _max_in_any_window(events: list[tuple[float, int]]) -> int:
    """Largest total in any half-open 60 s window [t - 60, t] ending at an event."""
    worst = 0
    for t, _ in events:
        worst = max(worst, sum(n for s, n in events if s <= t and t - s < WINDOW))
    return worst


@settings(max_examples=150, deadline=None)
@given(
    rate=st.integers(min_value=1, max_value=40),
    burst=st.one_of(st.none(), st.integers(min_value=1, max_value=40)),
    steps=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=20.0),
            st.integers(min_value=1, max_value=3),
            st.booleans(),
        ),
        min_size=1,
        max_size=250,
    ),
)
def test_never_more_than_rate_in_any_window(
    rate: int, burst: int | None, steps: list[tuple[float, int, bool]]
) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate, burst=burst, clock=clock)
    everything: list[tuple[float, int]] = []
    polls: list[tuple[float, int]] = []
    for gap, n, forced in steps:
        clock.advance(gap)
        if forced:
            bucket.force_acquire(n)
            everything.append((clock.now, n))
        elif bucket.try_acquire(n):
            everything.append((clock.now, n))
            polls.append((clock.now, n))
            # Forced calls count too: a poll never joins a window that is already full.
            now = clock.now
            assert sum(k for s, k in everything if now - s < WINDOW) <= rate
    assert _max_in_any_window(polls) <= rate


@settings(max_examples=100, deadline=None)
@given(
    rate=st.integers(min_value=1, max_value=30),
    gaps=st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=300),
)
def test_polls_alone_never_exceed_rate(rate: int, gaps: list[float]) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate, burst=rate, clock=clock)
    taken: list[tuple[float, int]] = []
    for gap in gaps:
        clock.advance(gap)
        if bucket.try_acquire():
            taken.append((clock.now, 1))
    assert _max_in_any_window(taken) <= rate


def test_a_full_bucket_alone_would_allow_double_rate_but_the_window_stops_it() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, burst=10, clock=clock)
    assert sum(bucket.try_acquire() for _ in range(20)) == 10
    clock.advance(59.0)  # the bucket has refilled (10/min), the 60 s window has not moved on
    assert not bucket.try_acquire()
    clock.advance(1.0)
    assert sum(bucket.try_acquire() for _ in range(20)) == 10


def test_sustains_the_rate_over_time() -> None:
    clock = FakeClock()
    bucket = TokenBucket(120, clock=clock)
    granted = 0
    for _ in range(600 * 10):  # ten minutes in 0.1 s steps
        clock.advance(0.1)
        granted += bucket.try_acquire()
    assert 1150 <= granted <= 1200


def test_burst_limits_instant_use() -> None:
    clock = FakeClock()
    bucket = TokenBucket(150, burst=5, clock=clock)
    assert sum(bucket.try_acquire() for _ in range(50)) == 5
    default = TokenBucket(150, clock=clock)
    assert default.burst == 15


def test_forced_calls_reduce_later_capacity() -> None:
    clock = FakeClock()
    plain = TokenBucket(10, burst=10, clock=clock)
    forced = TokenBucket(10, burst=10, clock=clock)
    for _ in range(4):
        forced.force_acquire()
    assert sum(plain.try_acquire() for _ in range(20)) == 10
    assert sum(forced.try_acquire() for _ in range(20)) == 6


def test_forced_calls_go_through_an_empty_bucket_and_make_polls_wait() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, burst=2, clock=clock)  # one token per second
    assert bucket.try_acquire(2)
    for _ in range(3):
        bucket.force_acquire()
    assert bucket._tokens == pytest.approx(-3)
    assert not bucket.try_acquire()
    assert bucket.seconds_until_available() == pytest.approx(4.0)
    clock.advance(3.9)
    assert not bucket.try_acquire()
    clock.advance(0.1 + 1e-6)
    assert bucket.try_acquire()


@settings(max_examples=100, deadline=None)
@given(
    rate=st.integers(min_value=1, max_value=30),
    burst=st.integers(min_value=1, max_value=30),
    forced=st.integers(min_value=0, max_value=40),
    n=st.integers(min_value=1, max_value=3),
    warmup=st.lists(st.floats(min_value=0.0, max_value=3.0), max_size=60),
)
def test_waiting_the_announced_time_is_enough(
    rate: int, burst: int, forced: int, n: int, warmup: list[float]
) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate, burst=burst, clock=clock)
    for gap in warmup:
        clock.advance(gap)
        bucket.try_acquire()
    for _ in range(forced):
        bucket.force_acquire()
    wait = bucket.seconds_until_available(n)
    if n > burst or n > rate:
        assert wait == math.inf
        assert not bucket.try_acquire(n)
        return
    assert wait >= 0
    if wait > 1e-3:
        clock.advance(wait * 0.999 - 1e-4)
        assert not bucket.try_acquire(n)
        clock.advance(wait - (wait * 0.999 - 1e-4))
    else:
        clock.advance(wait)
    assert bucket.try_acquire(n)


def test_a_closed_gate_blocks_polls_but_not_forced_calls() -> None:
    clock = FakeClock()
    gate = RateLimitGate(clock=clock)
    bucket = TokenBucket(100, burst=10, clock=clock, gate=gate)
    gate.hold(30.0)
    assert not bucket.try_acquire()
    assert bucket.seconds_until_available() == pytest.approx(30.0)
    bucket.force_acquire()
    clock.advance(29.0)
    assert not bucket.try_acquire()
    clock.advance(1.0)
    assert bucket.try_acquire()


def test_gate_holds_for_the_longest_retry_after() -> None:
    clock = FakeClock(10.0)
    gate = RateLimitGate(clock=clock)
    assert gate.remaining() == 0
    gate.hold(2.5)
    assert gate.remaining() == 2.5
    gate.hold(1.0)  # a shorter hold never shortens the running one
    for nonsense in (0.0, -5.0, math.inf, math.nan):
        gate.hold(nonsense)
    assert gate.remaining() == 2.5
    clock.advance(2.5)
    assert gate.remaining() == 0


def test_a_clock_stepping_back_refills_nothing() -> None:
    clock = FakeClock(500.0)
    bucket = TokenBucket(60, burst=1, clock=clock)
    assert bucket.try_acquire()
    clock.advance(-100.0)
    assert not bucket.try_acquire()


@pytest.mark.parametrize("kwargs", [{"rate_per_minute": 0}, {"rate_per_minute": -1}])
def test_rejects_bad_rates(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TokenBucket(clock=FakeClock(), **kwargs)


def test_rejects_bad_amounts() -> None:
    bucket = TokenBucket(10, clock=FakeClock())
    with pytest.raises(ValueError):
        bucket.try_acquire(0)
    with pytest.raises(ValueError):
        TokenBucket(10, burst=0, clock=FakeClock())


def test_available_counts_tokens_window_room_and_the_gate() -> None:
    """A claimer sizes its batch by available(): never more than try_acquire would grant."""
    now = [0.0]
    gate = RateLimitGate(clock=lambda: now[0])
    bucket = TokenBucket(60, burst=10, clock=lambda: now[0], gate=gate)
    assert bucket.available() == 10  # a full burst
    for _ in range(4):
        assert bucket.try_acquire()
    assert bucket.available() == 6
    gate.hold(5)
    assert bucket.available() == 0
    now[0] = 5.0  # pause over, 5 tokens refilled but capped by the burst
    assert bucket.available() == min(10, 6 + 5)
    # Fill the 60 s window: tokens refill, yet the window refuses, and so must available().
    granted = 4
    while now[0] < 59.0:
        now[0] += 0.5
        while bucket.try_acquire():
            granted += 1
    assert granted == 60
    assert bucket._tokens >= 1 and bucket.available() == 0
    granted_now = sum(bucket.try_acquire() for _ in range(5))
    assert granted_now == 0
