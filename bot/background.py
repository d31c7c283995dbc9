"""Work that outlives the request that started it (audit lines, what a listener does after its
ack): tracked, so that its failures are logged and shutdown can wait for it."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

_tasks: set[asyncio.Future[Any]] = set()


def spawn(work: Awaitable[T], *, what: str) -> asyncio.Future[T]:
    """Run `work` on its own; an exception it ends with is logged as `what` failing."""
    return track(asyncio.ensure_future(work), what=what)


def track(task: asyncio.Future[T], *, what: str) -> asyncio.Future[T]:
    """Keep a task that is already running until it ends (see `spawn`)."""
    _tasks.add(task)
    task.add_done_callback(functools.partial(_ended, what))
    return task


def _ended(what: str, task: asyncio.Future[Any]) -> None:
    _tasks.discard(task)
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("%s failed", what, exc_info=error)


async def drain(grace: float) -> None:
    """At shutdown, after the listeners: let what they started finish (or give up after
    `grace` seconds; what is left is cancelled with the event loop)."""
    if _tasks:
        await asyncio.wait(set(_tasks), timeout=grace)
