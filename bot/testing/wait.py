"""Wait on a condition with a deadline, never on a fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float, what: str = "", *, interval: float = 0.05
) -> T:
    """Poll `predicate` until it is truthy and return its value; fail naming `what` at the deadline.

    Blocks the calling thread: for async tests whose code under test shares the loop, use
    `async_wait_until`.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout}s: {what or predicate}")
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], T], timeout: float, what: str = "", *, interval: float = 0.02
) -> T:
    """`wait_until` that yields to the event loop between polls (in-process scenarios)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout}s: {what or predicate}")
        await asyncio.sleep(interval)
