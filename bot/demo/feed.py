"""What the bot did in Slack, read off the fake Slack's records as a stream of new events.

Each `poll()` returns what happened since the previous one, oldest first: posts, edits of a status
card, ephemeral messages and answers sent to a response_url. Calls the bot makes only to learn
something (auth.test, conversations.info) are left out: a person in Slack never sees them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.demo.fake_slack import FakeSlack
from bot.demo.slack_text import card_state, message_lines
from bot.testing.slack_view import FINISHED_EVENT

_SHOWN = ("chat.postMessage", "chat.update", "chat.postEphemeral")


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One thing a person in Slack would have seen happen."""

    at: float  # time.monotonic() when the fake received it
    kind: str  # card | finished | bot | answer
    title: str
    lines: list[str]
    body: Mapping[str, Any]


def is_finished_post(body: Mapping[str, Any]) -> bool:
    """The "your export is ready" post (its message metadata names the event)."""
    return (body.get("metadata") or {}).get("event_type") == FINISHED_EVENT


class SlackFeed:
    """Turns the fake Slack's recorded calls and response_url posts into `FeedEvent`s."""

    def __init__(self, slack: FakeSlack, names: Mapping[str, str] | None = None) -> None:
        """`names`: user and channel ids to show by name, as Slack would."""
        self._slack = slack
        self._names = dict(names or {})
        self._calls = 0
        self._responses = 0

    def _where(self, channel: Any) -> str:
        known = self._slack.channel(str(channel))
        return f"#{known.name}" if known else str(channel)

    def _call_event(self, method: str, body: Mapping[str, Any], at: float) -> FeedEvent:
        where = self._where(body.get("channel"))
        lines = message_lines(body, self._names)
        if method == "chat.update":
            state = card_state(body)
            title = f"Slack {where}: the bot edits its status card" + (
                f" -> {state}" if state else ""
            )
            return FeedEvent(at, "card", title, lines, body)
        if method == "chat.postEphemeral":
            title = f"Slack {where}: only @{self._names.get(str(body.get('user')), body.get('user'))} sees"
            return FeedEvent(at, "answer", title, lines, body)
        if is_finished_post(body):
            return FeedEvent(at, "finished", f"Slack {where}: the bot posts", lines, body)
        if card_state(body):
            state = card_state(body)
            title = f"Slack {where}: the bot posts a status card -> {state}"
            return FeedEvent(at, "card", title, lines, body)
        return FeedEvent(at, "bot", f"Slack {where}: the bot posts", lines, body)

    def poll(self) -> list[FeedEvent]:
        """Events since the last poll, oldest first (a call still unanswered waits its turn)."""
        events: list[FeedEvent] = []
        calls = self._slack.calls
        while self._calls < len(calls) and calls[self._calls].status is not None:
            call = calls[self._calls]
            self._calls += 1
            if call.method in _SHOWN and call.ok:
                events.append(self._call_event(call.method, call.body, call.at))
        responses = self._slack.responses()
        for response in responses[self._responses :]:
            body = response.body if isinstance(response.body, Mapping) else {"text": ""}
            seen_by = (
                "everyone in the channel"
                if body.get("response_type") == "in_channel"
                else "only the person who asked"
            )
            events.append(
                FeedEvent(
                    response.at,
                    "answer",
                    f"Slack: the bot answers via response_url ({seen_by} sees it)",
                    message_lines(body, self._names),
                    body,
                )
            )
        self._responses = len(responses)
        events.sort(key=lambda e: e.at)
        return events
