"""Listeners answer Slack the moment they ack; what they do afterwards runs on in the background.

Bolt's default (`process_before_response=False`) runs each listener as a task and looks for its
ack every 10 ms (`AsyncioListenerRunner`): an answer that waited 50 ms for Asana woke the event
loop five more times and reached Slack up to 10 ms late. The app runs with
`process_before_response=True`, in which Bolt awaits the listener itself, and this wrapper
returns to Bolt as soon as the listener has acked, leaving the rest of it (respond(), cards,
audit lines) to `bot.background`, as Bolt's own task did. A listener that takes no `ack`
(an event, which Bolt acks itself) runs wholly in the background.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot import background

log = logging.getLogger(__name__)

Listener = Callable[..., Awaitable[Any]]


class _SignallingAck:
    """Bolt's `ack`, which also says when it has been called."""

    def __init__(self, ack: Any) -> None:
        self._ack = ack
        #: True once the listener has called ack.
        self.acked = False
        #: Done once the listener has acked or ended, whichever is first (a future, so waiting
        #: on it needs no task, and the listener ending settles it by a done callback: cheaper
        #: than asyncio.wait on the two).
        self.settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def response(self) -> Any:
        return self._ack.response

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await self._ack(*args, **kwargs)
        finally:
            self.acked = True
            self.settle()

    def settle(self, _: object = None) -> None:
        if not self.settled.done():
            self.settled.set_result(None)


def returns_at_ack(listener: Listener) -> Listener:
    """Wrap a listener so that Bolt gets its answer at the ack (see the module doc)."""
    what = f"listener {listener.__name__}"

    @functools.wraps(listener)  # Bolt reads the arguments to pass from the wrapped function
    async def run(**kwargs: Any) -> Any:
        if "ack" not in kwargs:
            background.spawn(listener(**kwargs), what=what)
            return None
        ack = _SignallingAck(kwargs["ack"])
        body = asyncio.ensure_future(listener(**{**kwargs, "ack": ack}))
        body.add_done_callback(ack.settle)
        try:
            await ack.settled  # cancelled with this request, if it is cut: body runs on
        finally:
            if not body.done():
                background.track(body, what=what)  # after the ack, or if this request is cut
        if not body.done():
            return None
        if ack.acked and not body.cancelled() and body.exception() is not None:
            # Slack has its answer; an error after it is logged, as Bolt logged it.
            log.error("%s failed after its ack", what, exc_info=body.exception())
            return None
        return body.result()  # an error before the ack reaches Bolt's error handler

    return run
