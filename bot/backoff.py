"""How long to wait before trying Asana again: pure arithmetic, with time and randomness passed in.

Two users, one curve. A call retries within its own budget (`RetryPolicy`: full jitter, a server's
Retry-After instead of the backoff, a hard time budget and an attempt cap). A watch polls on a
schedule that starts quick, so small exports feel instant, and backs off to a cap ("every few
minutes", as Asana asks), with ± jitter to spread replicas apart; after a transient failure
Retry-After is a floor. Both climb `exponential()`. Nothing here reads a clock or sleeps: callers
pass `elapsed`, `rng` and a `Clock`, so tests run the rules without waiting.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

#: Monotonic seconds. Injected wherever time is read (client, budget, 429 gate), so tests step it.
Clock = Callable[[], float]

#: No poll delay is ever shorter than this, whatever the parameters and the jitter draw.
MIN_DELAY = 1.0


def exponential(count: int, initial: float, factor: float, cap: float) -> float:
    """initial * factor**count, capped at `cap`, without overflowing for large counts."""
    if initial == 0:
        return 0.0
    try:
        return min(cap, initial * math.pow(factor, count))
    except OverflowError:
        return cap


# ------------------------------------------------------------------ retries within one call


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Limits of one logical call, however many HTTP attempts it takes."""

    max_attempts: int = 5
    #: Seconds from the first attempt after which no wait may end and no attempt may start.
    max_retry_time: float = 20.0
    base_delay: float = 0.5
    max_delay: float = 8.0
    #: An attempt given less time than this is not worth starting.
    min_attempt_time: float = 0.1

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.max_retry_time < 0 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("times must not be negative")


def backoff_delay(retry_number: int, policy: RetryPolicy, rng: Callable[[], float]) -> float:
    """Full jitter: uniform in [0, min(max_delay, base_delay * 2**(retry_number - 1))).

    `retry_number` is 1 for the first retry; `rng()` returns a float in [0, 1).
    """
    ceiling = exponential(max(retry_number - 1, 0), policy.base_delay, 2.0, policy.max_delay)
    return max(0.0, min(rng(), 1.0)) * ceiling


def next_wait(
    policy: RetryPolicy,
    *,
    attempts_made: int,
    elapsed: float,
    retry_after: float | None,
    rng: Callable[[], float],
) -> float | None:
    """Seconds to wait before the next attempt, or None to give up now.

    A server's Retry-After wins over the backoff. Gives up when the attempts are used up or when
    waiting would leave no useful time inside the budget (we never sleep past the budget only
    to fail afterwards).
    """
    if attempts_made >= policy.max_attempts:
        return None
    if retry_after is not None:
        delay = max(0.0, retry_after)
    else:
        delay = backoff_delay(attempts_made, policy, rng)
    if not fits_budget(policy, elapsed=elapsed, wait=delay):
        return None
    return delay


def fits_budget(policy: RetryPolicy, *, elapsed: float, wait: float) -> bool:
    """Whether waiting `wait` seconds still leaves time for an attempt inside the budget."""
    return elapsed + wait + policy.min_attempt_time <= policy.max_retry_time


def attempt_timeout(policy: RetryPolicy, *, timeout: float, elapsed: float, first: bool) -> float:
    """The timeout of one attempt: the full timeout first, then whatever the budget has left.

    The first attempt always gets the full timeout (a budget of 0 means "no retries", not "no
    time"), so one call lasts at most about max(timeout, max_retry_time).
    """
    if first:
        return timeout
    return max(policy.min_attempt_time, min(timeout, policy.max_retry_time - elapsed))


# -------------------------------------------------------------------- the polling schedule


def _poll_base(count: int, initial: float, factor: float, cap: float) -> float:
    if count < 0:
        raise ValueError("count must be >= 0")
    if initial <= 0 or factor < 1 or cap <= 0:
        raise ValueError("need initial > 0, factor >= 1 and cap > 0")
    return exponential(count, initial, factor, cap)


def _jittered(base: float, cap: float, jitter: float, rng: random.Random) -> float:
    if not 0 <= jitter < 1:
        raise ValueError("jitter must be in [0, 1)")
    delay = base * (1 + rng.uniform(-jitter, jitter))
    return min(max(delay, MIN_DELAY), max(cap * (1 + jitter), MIN_DELAY))


def next_poll_delay(
    poll_count: int,
    *,
    initial: float = 15.0,
    factor: float = 2.0,
    cap: float = 300.0,
    jitter: float = 0.1,
    rng: random.Random,
) -> float:
    """Seconds until the next poll of an export already polled `poll_count` times."""
    base = _poll_base(poll_count, initial, factor, cap)
    return _jittered(base, cap, jitter, rng)


def transient_retry_delay(
    failures: int,
    *,
    retry_after: float | None,
    initial: float = 5.0,
    factor: float = 2.0,
    cap: float = 600.0,
    jitter: float = 0.1,
    rng: random.Random,
) -> float:
    """Seconds to wait after `failures` consecutive transient failures (429, 5xx, timeouts).

    Asana's Retry-After is a floor, honoured even above the cap: asking again earlier is
    rejected and still counts against the token's quota.
    """
    base = _poll_base(max(failures - 1, 0), initial, factor, cap)
    delay = _jittered(base, cap, jitter, rng)
    if retry_after is not None and math.isfinite(retry_after):
        delay = max(delay, retry_after)
    return delay
