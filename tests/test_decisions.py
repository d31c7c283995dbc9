"""The decision after each poll, with an injected clock and seeded randomness."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.decisions import (
    END_REASONS,
    Outcome,
    PollPolicy,
    plan_after_failure,
    plan_after_success,
)
from bot.models import Export, ExportState, ProblemKind

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
POLICY = PollPolicy(initial=15, factor=2, cap=300, jitter=0.0, paused_retry=600)


def export(state: ExportState) -> Export:
    return Export(gid="1", state=state, download_url="https://x.test/?sig=1")


def success(previous: ExportState, new: ExportState, *, paused: bool = False, count: int = 0):
    return plan_after_success(
        previous, paused, count, export(new), now=NOW, policy=POLICY, rng=random.Random(1)
    )


def failure(kind: ProblemKind, *, paused: str | None = None, failures: int = 0, retry_after=None):
    return plan_after_failure(
        kind,
        retry_after=retry_after,
        consecutive_failures=failures,
        paused_reason=paused,
        now=NOW,
        policy=POLICY,
        rng=random.Random(1),
    )


def test_unchanged_state_schedules_next_poll_without_card_update() -> None:
    plan = success(ExportState.PENDING, ExportState.PENDING, count=0)
    assert plan.outcome is Outcome.CONTINUE and not plan.state_changed
    assert plan.next_poll_at == NOW + timedelta(seconds=15)


@pytest.mark.parametrize(
    ("count", "seconds"), [(0, 15), (1, 30), (2, 60), (4, 240), (5, 300), (50, 300)]
)
def test_backoff_doubles_to_the_cap(count: int, seconds: float) -> None:
    plan = success(ExportState.STARTED, ExportState.STARTED, count=count)
    assert plan.next_poll_at == NOW + timedelta(seconds=seconds)


def test_state_change_updates_cards() -> None:
    assert success(ExportState.PENDING, ExportState.STARTED).state_changed
    assert success(ExportState.STARTED, ExportState.UNKNOWN).state_changed


def test_success_after_pause_updates_cards() -> None:
    assert success(ExportState.STARTED, ExportState.STARTED, paused=True).state_changed


@pytest.mark.parametrize(
    ("state", "outcome"),
    [(ExportState.FINISHED, Outcome.FINISHED), (ExportState.ERROR, Outcome.FAILED)],
)
def test_terminal_states_stop_polling(state: ExportState, outcome: Outcome) -> None:
    plan = success(ExportState.STARTED, state)
    assert plan.outcome is outcome and plan.next_poll_at is None and plan.state_changed
    assert outcome in END_REASONS


def test_not_found_ends_the_watch() -> None:
    plan = failure(ProblemKind.NOT_FOUND)
    assert plan.outcome is Outcome.GONE and plan.next_poll_at is None


@pytest.mark.parametrize(
    "kind", [ProblemKind.UNAUTHORIZED, ProblemKind.FORBIDDEN, ProblemKind.PAYMENT_REQUIRED]
)
def test_lost_access_pauses_and_announces_once(kind: ProblemKind) -> None:
    first = failure(kind)
    assert first.outcome is Outcome.PAUSED and first.announce_pause
    assert first.paused_reason == kind.value
    assert first.next_poll_at == NOW + timedelta(seconds=600)
    again = failure(kind, paused=kind.value)
    assert again.outcome is Outcome.PAUSED and not again.announce_pause


def test_only_what_needs_a_person_pauses() -> None:
    """401, 402 and 403 are one property of the kind; a poll pauses on exactly those."""
    assert {kind for kind in ProblemKind if kind.needs_person} == {
        ProblemKind.UNAUTHORIZED,
        ProblemKind.PAYMENT_REQUIRED,
        ProblemKind.FORBIDDEN,
    }
    for kind in ProblemKind:
        assert not (kind.needs_person and kind.is_transient), kind
        if kind is not ProblemKind.NOT_FOUND:
            assert (failure(kind).outcome is Outcome.PAUSED) is kind.needs_person, kind


@pytest.mark.parametrize(
    "kind",
    [ProblemKind.ASANA_DOWN, ProblemKind.TIMEOUT, ProblemKind.CONNECTION, ProblemKind.MALFORMED],
)
def test_transient_failures_back_off_quietly_and_keep_a_pause(kind: ProblemKind) -> None:
    plan = failure(kind, paused="unauthorized", failures=2)
    assert plan.outcome is Outcome.RETRY and not plan.announce_pause
    assert plan.paused_reason == "unauthorized", "a 5xx says nothing about access"
    assert plan.next_poll_at is not None and plan.next_poll_at > NOW


def test_retry_after_is_a_floor() -> None:
    plan = failure(ProblemKind.RATE_LIMITED, retry_after=1234)
    assert plan.next_poll_at == NOW + timedelta(seconds=1234)


@given(
    st.sampled_from(list(ExportState)),
    st.sampled_from(list(ExportState)),
    st.integers(0, 10_000),
    st.booleans(),
    st.integers(0, 2**32),
)
def test_next_poll_is_always_in_the_future_and_bounded(prev, new, count, paused, seed) -> None:
    policy = PollPolicy(initial=15, factor=2, cap=300, jitter=0.1)
    plan = plan_after_success(
        prev, paused, count, export(new), now=NOW, policy=policy, rng=random.Random(seed)
    )
    if new.is_terminal:
        assert plan.next_poll_at is None
    else:
        assert plan.next_poll_at is not None
        assert NOW < plan.next_poll_at <= NOW + timedelta(seconds=300 * 1.1 + 1e-6)


@given(st.sampled_from(list(ProblemKind)), st.integers(0, 1000), st.none() | st.floats(0, 10_000))
def test_failures_never_poll_sooner_than_retry_after(kind, failures, retry_after) -> None:
    plan = plan_after_failure(
        kind,
        retry_after=retry_after,
        consecutive_failures=failures,
        paused_reason=None,
        now=NOW,
        policy=POLICY,
        rng=random.Random(0),
    )
    if plan.next_poll_at is not None and retry_after is not None:
        assert plan.next_poll_at >= NOW + timedelta(seconds=retry_after)
