"""How often the status card may show an archive's progress (pure; the clock is passed in)."""

from __future__ import annotations

from collections.abc import Callable

#: Slack's rate limits and people's attention: a card is edited at most this often.
CARD_EDIT_SECONDS = 10.0


class EditThrottle:
    """`due()` is True at the first call, then at most once every `interval` seconds."""

    def __init__(self, clock: Callable[[], float], interval: float = CARD_EDIT_SECONDS) -> None:
        self._clock = clock
        self._interval = interval
        self._last: float | None = None

    def due(self) -> bool:
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            return False
        self._last = now
        return True
