"""Block Kit building: the `Message` type and block builders that enforce Slack's limits.

Limits are enforced here, so no renderer can exceed them: section text <= 3000, section fields
<= 2000, header <= 150, button text <= 75, button url <= 3000, button value <= 2000, <= 50 blocks
per message. mrkdwn is cut with `clip`, which never cuts an entity or a `<...>` construct in half.
The builders take mrkdwn that is already safe (see `mrkdwn`); plain_text only ever carries our own
words.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bot.messages.mrkdwn import clip, truncate

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELD_TEXT = 2000
MAX_FIELDS = 10
MAX_HEADER_TEXT = 150
MAX_BUTTON_TEXT = 75
MAX_BUTTON_URL = 3000
MAX_BUTTON_VALUE = 2000
MAX_CONTEXT_TEXT = 2000
MAX_FALLBACK_TEXT = 3000

ResponseType = Literal["in_channel", "ephemeral"]
Block = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Message:
    """A rendered message: plain fallback text (never empty), blocks, and who sees it."""

    text: str
    blocks: list[Block]
    response_type: ResponseType | None = None

    def __post_init__(self) -> None:
        if not self.text:
            raise ValueError("Slack needs a non-empty fallback text")
        if len(self.blocks) > MAX_BLOCKS:
            raise ValueError(f"{len(self.blocks)} blocks; Slack allows {MAX_BLOCKS}")

    def to_ack(self) -> dict[str, Any]:
        """Keyword arguments for Bolt's `ack()` / `respond()`."""
        return {
            "text": self.text,
            "blocks": _copy(self.blocks),
            "response_type": self.response_type,
        }

    def to_post(self) -> dict[str, Any]:
        """Keyword arguments (besides `channel`, `ts`) for `chat.postMessage` / `chat.update`."""
        return {"text": self.text, "blocks": _copy(self.blocks)}


def _copy(value: Any) -> Any:
    """A deep copy of JSON-shaped blocks (dicts, lists and immutable leaves), as copy.deepcopy
    makes it but several times cheaper: every command's answer is copied once."""
    kind = type(value)
    if kind is dict:
        return {k: _copy(v) for k, v in value.items()}
    if kind is list:
        return [_copy(v) for v in value]
    if kind is str or kind is int or kind is bool or kind is float or value is None:
        return value
    return copy.deepcopy(value)  # anything else a renderer may put there: copied as before


def section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, MAX_SECTION_TEXT)}}


def fields(pairs: Sequence[tuple[str, str]]) -> Block:
    """A section of labelled values; labels are ours, values must already be escaped."""
    return {
        "type": "section",
        "fields": [
            {"type": "mrkdwn", "text": clip(f"*{label}*\n{value}", MAX_FIELD_TEXT)}
            for label, value in pairs[:MAX_FIELDS]
        ],
    }


def header(text: str) -> Block:
    """Headers only ever carry our own words: plain_text is not escaped, so no foreign strings."""
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": truncate(text, MAX_HEADER_TEXT), "emoji": True},
    }


def context(*texts: str) -> Block:
    return {
        "type": "context",
        "elements": [
            {"type": "mrkdwn", "text": clip(t, MAX_CONTEXT_TEXT)} for t in texts[:10] if t
        ],
    }


def button(
    text: str,
    *,
    action_id: str,
    url: str | None = None,
    value: str | None = None,
    style: Literal["primary", "danger"] | None = None,
) -> Block:
    built: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": truncate(text, MAX_BUTTON_TEXT), "emoji": True},
        "action_id": action_id,
    }
    if url is not None:
        built["url"] = url
    if value is not None:
        built["value"] = value
    if style is not None:
        built["style"] = style
    return built


def actions(*elements: Block | None) -> Block | None:
    """An actions block of the elements that exist; None (left out) when there is none."""
    kept = [e for e in elements if e is not None]
    return {"type": "actions", "elements": kept} if kept else None


def message(
    text: str, blocks: Iterable[Block | None], response_type: ResponseType | None = None
) -> Message:
    """A `Message` of the blocks that exist, its fallback text clipped to Slack's limit."""
    kept = [b for b in blocks if b is not None][:MAX_BLOCKS]
    return Message(clip(text, MAX_FALLBACK_TEXT) or "…", kept, response_type)


def notice(text: str, response_type: ResponseType | None = "ephemeral") -> Message:
    """A message that is one sentence: the same mrkdwn as fallback text and as its only section."""
    return message(text, [section(text)], response_type)
