"""The Asana request budget for one token, and the one gate a 429 closes for the whole token.

Pure and clock-injected. The bucket spreads requests out (at most `burst` at once, refilled at
rate/60 per second); the window makes "at most `rate_per_minute` in any 60 seconds" exact,
which a bucket alone does not (a full bucket plus a minute of refill is burst + rate).
Polls use try_acquire and wait their turn; interactive lookups use force_acquire: they always
go, but they count, so polls back off afterwards.

Asana's Retry-After applies to every request on the token, not only the one that got the 429.
`RateLimitGate` is where that hold lives, once per process: the client closes it on a 429 and
waits at it before each request, and the polling budget refuses while it is closed, so a 429
seen by a lookup defers polls and a 429 seen by a poll holds lookups.
"""

from __future__ import annotations

import math
from collections import deque

from bot.backoff import Clock

#: The window Asana's per-minute limits are counted over, in seconds.
WINDOW = 60.0
#: Float slack so that waiting exactly seconds_until_available() is enough.
_EPSILON = 1e-9


class RateLimitGate:
    """Closed from a 429 until its Retry-After has passed; shared by everything on one token."""

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._until = -math.inf

    def hold(self, seconds: float) -> None:
        """Close the gate for `seconds` from now (never shortens a hold already running)."""
        if seconds > 0 and math.isfinite(seconds):
            self._until = max(self._until, self._clock() + seconds)

    def remaining(self) -> float:
        """Seconds until the token may be used again (0 when it may now)."""
        return max(0.0, self._until - self._clock())


class TokenBucket:
    """At most `rate_per_minute` acquisitions in any 60 s window, at most `burst` at once.

    With a `gate`, try_acquire also refuses while the gate is closed (forced calls still go:
    the client holds them at the gate itself).
    """

    def __init__(
        self,
        rate_per_minute: float,
        *,
        burst: int | None = None,
        clock: Clock,
        gate: RateLimitGate | None = None,
    ) -> None:
        if not rate_per_minute > 0 or not math.isfinite(rate_per_minute):
            raise ValueError("rate_per_minute must be a positive number")
        if burst is None:
            burst = max(1, math.ceil(rate_per_minute / 10))
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate_per_minute = float(rate_per_minute)
        self.burst = burst
        self._clock = clock
        self._per_second = self.rate_per_minute / WINDOW
        self._tokens = float(burst)
        self._last = clock()
        #: Asana's 429 hold for the token, shared with the client (None: no hold applies).
        self.gate = gate
        self._log: deque[tuple[float, int]] = deque()  # (time, n), oldest first
        self._in_window = 0

    def _advance(self) -> float:
        now = self._clock()
        elapsed = now - self._last
        if elapsed > 0:  # a clock that steps back refills nothing
            self._tokens = min(float(self.burst), self._tokens + elapsed * self._per_second)
            self._last = now
        while self._log and now - self._log[0][0] >= WINDOW:
            self._in_window -= self._log.popleft()[1]
        return now

    def _record(self, now: float, n: int) -> None:
        self._tokens -= n
        self._log.append((now, n))
        self._in_window += n

    def try_acquire(self, n: int = 1) -> bool:
        """Take n tokens if the budget allows it now; polls that get False are deferred."""
        _check(n)
        now = self._advance()
        if (
            self._held()
            or self._tokens + _EPSILON < n
            or self._in_window + n > self.rate_per_minute
        ):
            return False
        self._record(now, n)
        return True

    def force_acquire(self, n: int = 1) -> None:
        """Take n tokens whatever the budget (a person is waiting); the debt delays polls."""
        _check(n)
        self._record(self._advance(), n)

    def _held(self) -> bool:
        return self.gate is not None and self.gate.remaining() > 0

    def seconds_until_available(self, n: int = 1) -> float:
        """How long until try_acquire(n) can succeed; inf if it never can (n > burst or rate)."""
        _check(n)
        if n > self.burst or n > self.rate_per_minute:
            return math.inf
        now = self._advance()
        waits = [self.gate.remaining() if self.gate is not None else 0.0]
        if self._tokens + _EPSILON < n:
            waits.append((n - self._tokens) / self._per_second)
        excess = self._in_window + n - self.rate_per_minute
        if excess > 0:
            for when, count in self._log:
                excess -= count
                if excess <= 0:
                    waits.append(when + WINDOW - now)
                    break
        wait = max(waits)
        return wait + _EPSILON * max(1.0, abs(now)) if wait > 0 else 0.0

    def available(self) -> int:
        """How many try_acquire(1) calls would succeed now: tokens, window room and the gate.

        A claimer sizes its batch by this, so it never leases exports the budget will refuse
        (the tokens alone say yes while the sliding window is full).
        """
        self._advance()
        if self._held():
            return 0
        room = min(self._tokens + _EPSILON, self.rate_per_minute - self._in_window)
        return max(0, math.floor(room))


def _check(n: int) -> None:
    if n < 1:
        raise ValueError("n must be at least 1")
