"""What one poll's result means for a watched export: pure, clock and randomness injected."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.backoff import next_poll_delay, transient_retry_delay
from bot.models import EndReason, Export, ExportState, ProblemKind


class Outcome(enum.StrEnum):
    """What the watcher must do after a poll."""

    CONTINUE = "continue"  # keep watching; update cards if the state changed
    FINISHED = "finished"  # post the fresh link to every watcher, end the watches
    FAILED = "failed"  # Asana says the export failed: tell every watcher once, end
    GONE = "gone"  # 404: the export no longer exists: tell every watcher once, end
    PAUSED = "paused"  # the token lost access: tell watchers once, keep polling slowly
    RETRY = "retry"  # a transient failure: back off, nobody is told


#: Why a watch ends once it has been told an outcome (`subscriptions.end_reason`).
END_REASONS = {
    Outcome.FINISHED: EndReason.FINISHED,
    Outcome.FAILED: EndReason.EXPORT_FAILED,
    Outcome.GONE: EndReason.EXPORT_NOT_FOUND,
}

#: What its watchers are told about an export whose stored state has ended.
_ENDED = {
    ExportState.FINISHED: Outcome.FINISHED,
    ExportState.ERROR: Outcome.FAILED,
    ExportState.GONE: Outcome.GONE,
}


def ended_outcome(state: ExportState) -> Outcome | None:
    """The outcome its watchers are owed for a stored state; None while it may still change."""
    return _ENDED.get(state)


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """The knobs of adaptive polling; every interval configurable so tests run in seconds."""

    initial: float = 15.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: float = 0.1
    paused_retry: float = 300.0


@dataclass(frozen=True, slots=True)
class PollPlan:
    """The decision: what to store and what to tell people."""

    outcome: Outcome
    next_poll_at: datetime | None  # None: stop polling
    state_changed: bool  # cards need chat.update
    announce_pause: bool = False  # first poll of a pause: tell watchers once
    paused_reason: str | None = None
    error: str | None = None
    #: A state to store that no fetch returned (GONE); None keeps the stored one.
    state: ExportState | None = None


def plan_after_success(
    previous_state: ExportState,
    was_paused: bool,
    poll_count: int,
    export: Export,
    *,
    now: datetime,
    policy: PollPolicy,
    rng: random.Random,
) -> PollPlan:
    """A fetched export: terminal states end the watch, others schedule the next poll."""
    changed = export.state is not previous_state or was_paused
    if export.state is ExportState.FINISHED:
        return PollPlan(Outcome.FINISHED, None, state_changed=True)
    if export.state is ExportState.ERROR:
        return PollPlan(Outcome.FAILED, None, state_changed=True)
    delay = next_poll_delay(
        poll_count,
        initial=policy.initial,
        factor=policy.factor,
        cap=policy.cap,
        jitter=policy.jitter,
        rng=rng,
    )
    return PollPlan(Outcome.CONTINUE, now + timedelta(seconds=delay), state_changed=changed)


def plan_after_failure(
    kind: ProblemKind,
    *,
    retry_after: float | None,
    consecutive_failures: int,
    paused_reason: str | None,
    now: datetime,
    policy: PollPolicy,
    rng: random.Random,
) -> PollPlan:
    """A failed poll: 404 ends, lost access pauses, anything else backs off quietly."""
    if kind is ProblemKind.NOT_FOUND:
        return PollPlan(
            Outcome.GONE, None, state_changed=False, error=kind.value, state=ExportState.GONE
        )
    was_paused = paused_reason is not None
    if kind.needs_person:
        return PollPlan(
            Outcome.PAUSED,
            now + timedelta(seconds=max(policy.paused_retry, retry_after or 0.0)),
            state_changed=not was_paused,
            announce_pause=not was_paused,
            paused_reason=kind.value,
            error=kind.value,
        )
    delay = transient_retry_delay(
        consecutive_failures + 1,
        retry_after=retry_after,
        initial=policy.initial,
        factor=policy.factor,
        cap=policy.cap,
        jitter=policy.jitter,
        rng=rng,
    )
    return PollPlan(
        Outcome.RETRY,
        now + timedelta(seconds=delay),
        state_changed=False,
        # A transient failure says nothing about access: a pause stays until a poll succeeds.
        paused_reason=paused_reason,
        error=kind.value,
    )
