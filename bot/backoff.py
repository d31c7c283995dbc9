"""How long to wait before the next poll: pure functions, randomness injected.

Asana says exports take minutes to hours and to poll "every few minutes": start quick so small
exports feel instant, then back off to the cap. Jitter spreads replicas and channels apart.
"""

from __future__ import annotations

import math
import random

#: No delay is ever shorter than this, whatever the parameters and the jitter draw.
MIN_DELAY = 1.0


def _exponential(count: int, initial: float, factor: float, cap: float) -> float:
    """initial * factor**count, capped, without overflowing for large counts."""
    if count < 0:
        raise ValueError("count must be >= 0")
    if initial <= 0 or factor < 1 or cap <= 0:
        raise ValueError("need initial > 0, factor >= 1 and cap > 0")
    if factor > 1 and count > math.log(cap / initial, factor) + 1:
        return cap
    return min(cap, initial * factor**count)


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
    base = _exponential(poll_count, initial, factor, cap)
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
    base = _exponential(max(failures - 1, 0), initial, factor, cap)
    delay = _jittered(base, cap, jitter, rng)
    if retry_after is not None and math.isfinite(retry_after):
        delay = max(delay, retry_after)
    return delay
