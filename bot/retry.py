"""When to try a call to Asana again: pure arithmetic, with time and randomness passed in.

Kept apart from the HTTP client so the rules (exponential backoff with full jitter, Retry-After
honoured, a hard time budget and an attempt cap) are tested without a network or a clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


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
    exponent = min(max(retry_number - 1, 0), 62)  # no float overflow for silly inputs
    ceiling = min(policy.max_delay, policy.base_delay * math.pow(2.0, exponent))
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


def gate_wait(rate_limited_until: float | None, now: float) -> float:
    """Seconds left before the token may be used again after a 429 (0 when free)."""
    if rate_limited_until is None:
        return 0.0
    return max(0.0, rate_limited_until - now)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP-date; None when absent or bad."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
