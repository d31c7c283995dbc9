"""Listeners return to Bolt at their ack; the rest runs on in the background (handlers.acking).

The end-to-end tests drive every listener through Bolt with this wrapper in place; these pin
down the wrapper's own promises with a stand-in for Bolt's `ack`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from slack_bolt.util.utils import get_arg_names_of_callable

from bot import background
from handlers.acking import returns_at_ack


class FakeAck:
    """Bolt's `ack`: remembers what it was called with as the response."""

    def __init__(self) -> None:
        self.response: Any = None

    async def __call__(self, text: str = "") -> None:
        self.response = {"text": text}


async def test_bolt_still_reads_the_listeners_own_arguments() -> None:
    async def listener(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()

    assert get_arg_names_of_callable(returns_at_ack(listener)) == ["ack", "body", "respond"]


async def test_returns_at_the_ack_and_the_rest_runs_on() -> None:
    go_on = asyncio.Event()
    finished = asyncio.Event()

    async def listener(ack: Any) -> None:
        await ack("answer")
        await go_on.wait()  # e.g. respond() or a card post after the answer
        finished.set()

    ack = FakeAck()
    await asyncio.wait_for(returns_at_ack(listener)(ack=ack), 2)
    assert ack.response == {"text": "answer"} and not finished.is_set()
    go_on.set()
    await background.drain(grace=2)
    assert finished.is_set()


async def test_an_error_before_the_ack_reaches_bolt() -> None:
    async def listener(ack: Any) -> None:
        raise RuntimeError("broken before the answer")

    with pytest.raises(RuntimeError, match="broken before the answer"):
        await returns_at_ack(listener)(ack=FakeAck())


async def test_an_error_after_the_ack_is_logged_and_the_answer_stands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def at_once(ack: Any) -> None:
        await ack("answer")
        raise RuntimeError("broken right after")

    async def later(ack: Any) -> None:
        await ack("answer")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        raise RuntimeError("broken later")

    with caplog.at_level(logging.ERROR):
        for listener in (at_once, later):
            ack = FakeAck()
            assert await returns_at_ack(listener)(ack=ack) is None
            assert ack.response == {"text": "answer"}
        await background.drain(grace=2)
    text = caplog.text
    assert "listener at_once failed after its ack" in text and "broken right after" in text
    assert "listener later failed" in text and "broken later" in text


async def test_a_listener_without_ack_runs_wholly_in_the_background() -> None:
    """Events: Bolt acks them itself once the listener returns."""
    release = asyncio.Event()
    ran = asyncio.Event()

    async def on_event(event: dict[str, Any]) -> None:
        await release.wait()
        ran.set()

    await asyncio.wait_for(returns_at_ack(on_event)(event={}), 2)
    assert not ran.is_set()
    release.set()
    await background.drain(grace=2)
    assert ran.is_set()
