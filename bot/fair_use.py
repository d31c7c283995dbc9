"""Who may spend the Asana budget now: polling's reserved share, people's share, per-user limits.

Pure and clock-injected. Polls take from the token's budget (`TokenBucket.try_acquire`) and
wait their turn. People (lookups, "Get a fresh link") must first get a token from their own
lane, a second bucket with `1 - reserved_share` of the budget's rate, and then count against
the budget like before (so polls defer after them). Because the lane is itself limited to that
rate in any 60 s, people can never take more than their share in any window: polling keeps at
least `reserved_share` of `POLL_BUDGET_PER_MINUTE`, and the debt people leave on the budget is
at most the lane's burst. Past that a person is told "busy, try again in N s" and no Asana
call is made. Each person also has their own small bucket (`user_per_minute`), kept for at
most `max_users` people (least recently seen forgotten first), so memory stays bounded.
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from dataclasses import dataclass

from bot.backoff import Clock
from bot.ratelimit import TokenBucket

#: How many people's limiters one process remembers; older ones are forgotten (reset).
DEFAULT_MAX_USERS = 10_000


class Limit(enum.StrEnum):
    """Why a person's request was refused."""

    BUSY = "busy"  # people's share of the Asana budget is used up for now
    USER = "user"  # this person sent more than USER_REQUESTS_PER_MINUTE


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request that must not reach Asana now, and whole seconds until it would be admitted."""

    limit: Limit
    retry_after: int


def _whole_seconds(wait: float) -> int:
    """What to tell a person: at least 1 s, rounded up; a minute if the lane can never admit."""
    # The bucket pads its answer by a float epsilon; 12.000000001 s is still "12 s".
    return max(1, math.ceil(wait - 1e-6)) if math.isfinite(wait) else 60


class UserLimiter:
    """At most `per_minute` requests per person in any 60 s, for the `max_users` seen last."""

    def __init__(
        self,
        per_minute: float,
        *,
        clock: Clock,
        max_users: int = DEFAULT_MAX_USERS,
    ) -> None:
        if max_users < 1:
            raise ValueError("max_users must be at least 1")
        self.per_minute = per_minute
        self.max_users = max_users
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def _bucket(self, user_id: str) -> TokenBucket:
        bucket = self._buckets.get(user_id)
        if bucket is None:
            # burst = the whole minute's allowance: a person may paste a few gids at once.
            bucket = TokenBucket(
                self.per_minute, burst=max(1, math.floor(self.per_minute)), clock=self._clock
            )
            self._buckets[user_id] = bucket
            while len(self._buckets) > self.max_users:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(user_id)
        return bucket

    def wait(self, user_id: str) -> float:
        """Seconds until `user_id` may send again (0 when they may now)."""
        return self._bucket(user_id).seconds_until_available()

    def take(self, user_id: str) -> None:
        self._bucket(user_id).try_acquire()

    def __len__(self) -> int:
        return len(self._buckets)


class FairUse:
    """Admits people's requests to the shared budget without letting them starve polling."""

    def __init__(
        self,
        budget: TokenBucket,
        *,
        reserved_share: float,
        user_per_minute: float,
        clock: Clock,
        max_users: int = DEFAULT_MAX_USERS,
    ) -> None:
        if not 0 <= reserved_share < 1:
            raise ValueError("reserved_share must be in [0, 1)")
        self.budget = budget
        self.reserved_share = reserved_share
        self.people = TokenBucket(budget.rate_per_minute * (1 - reserved_share), clock=clock)
        self.users = UserLimiter(user_per_minute, clock=clock, max_users=max_users)

    def admit(self, user_id: str) -> Refusal | None:
        """Take one request for `user_id`, or say why not and for how long (nothing taken)."""
        user_wait = self.users.wait(user_id)
        if user_wait > 0:
            return Refusal(Limit.USER, _whole_seconds(user_wait))
        people_wait = self.people.seconds_until_available()
        if people_wait > 0:
            return Refusal(Limit.BUSY, _whole_seconds(people_wait))
        self.users.take(user_id)
        self.people.try_acquire()
        self.budget.force_acquire()  # counts, so polls defer; bounded by the lane's burst
        return None
