"""The polling delay policy: growth, cap, jitter bounds, Retry-After as a floor."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.backoff import MIN_DELAY, next_poll_delay, transient_retry_delay


def test_grows_from_initial_to_cap_without_jitter() -> None:
    rng = random.Random(0)
    delays = [next_poll_delay(n, jitter=0.0, rng=rng) for n in range(8)]
    assert delays == [15.0, 30.0, 60.0, 120.0, 240.0, 300.0, 300.0, 300.0]


def test_huge_poll_counts_stay_at_cap() -> None:
    assert next_poll_delay(10_000, jitter=0.0, rng=random.Random(0)) == 300.0


@given(
    poll_count=st.integers(min_value=0, max_value=5_000),
    jitter=st.floats(min_value=0.0, max_value=0.5),
    seed=st.integers(),
)
def test_jitter_stays_within_bounds(poll_count: int, jitter: float, seed: int) -> None:
    delay = next_poll_delay(poll_count, jitter=jitter, rng=random.Random(seed))
    base = min(300.0, 15.0 * 2.0 ** min(poll_count, 64))
    assert max(MIN_DELAY, base * (1 - jitter)) - 1e-9 <= delay <= base * (1 + jitter) + 1e-9
    assert delay <= 300.0 * (1 + jitter) + 1e-9


def test_jitter_actually_spreads_delays() -> None:
    rng = random.Random(42)
    delays = {round(next_poll_delay(3, rng=rng), 6) for _ in range(50)}
    assert len(delays) > 40
    assert min(delays) < 120.0 < max(delays)


def test_floor_holds_for_tiny_initial() -> None:
    assert next_poll_delay(0, initial=0.01, jitter=0.0, rng=random.Random(0)) == MIN_DELAY


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": 0.0}, {"factor": 0.5}, {"cap": 0.0}, {"jitter": 1.0}, {"jitter": -0.1}],
)
def test_rejects_nonsense_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        next_poll_delay(1, rng=random.Random(0), **kwargs)


def test_rejects_negative_count() -> None:
    with pytest.raises(ValueError):
        next_poll_delay(-1, rng=random.Random(0))


def test_transient_delay_grows_per_failure_and_caps() -> None:
    rng = random.Random(0)
    got = [transient_retry_delay(f, retry_after=None, jitter=0.0, rng=rng) for f in range(1, 10)]
    assert got[:4] == [5.0, 10.0, 20.0, 40.0]
    assert got[-1] == 600.0
    assert transient_retry_delay(0, retry_after=None, jitter=0.0, rng=rng) == 5.0


@given(
    failures=st.integers(min_value=0, max_value=100),
    retry_after=st.floats(min_value=0.0, max_value=100_000.0),
    seed=st.integers(),
)
def test_retry_after_is_a_floor(failures: int, retry_after: float, seed: int) -> None:
    delay = transient_retry_delay(failures, retry_after=retry_after, rng=random.Random(seed))
    assert delay >= retry_after
    assert delay <= max(retry_after, 600.0 * 1.1 + 1e-9)


def test_retry_after_above_cap_is_honoured() -> None:
    assert transient_retry_delay(1, retry_after=3600.0, rng=random.Random(0)) == 3600.0


def test_non_finite_retry_after_is_ignored() -> None:
    delay = transient_retry_delay(1, retry_after=float("inf"), jitter=0.0, rng=random.Random(0))
    assert delay == 5.0
