"""Views (the App Home tab, modals): the `View` type and the pieces views share.

A view holds up to 100 blocks (a message 50); a modal's title, submit and close labels are
plain text of at most 24 characters.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from bot.messages.blocks import Block
from bot.messages.mrkdwn import clip

#: Slack's limit on the blocks of a view (App Home tab or modal).
MAX_VIEW_BLOCKS = 100
#: A modal's title, submit and close labels.
MAX_MODAL_LABEL = 24


@dataclass(frozen=True, slots=True)
class View:
    """A rendered view (the App Home tab or a modal): what views.publish / views.open take."""

    type: str
    blocks: list[Block]
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.blocks) > MAX_VIEW_BLOCKS:
            raise ValueError(f"{len(self.blocks)} blocks; a view holds {MAX_VIEW_BLOCKS}")

    def to_view(self) -> dict[str, Any]:
        """The `view` argument of views.publish / views.open."""
        return {
            "type": self.type,
            **copy.deepcopy(self.extra),
            "blocks": copy.deepcopy(self.blocks),
        }


def plain_label(text: str) -> dict[str, Any]:
    """A modal label or a confirm button: our own words, cut to what Slack takes."""
    return {"type": "plain_text", "text": text[:MAX_MODAL_LABEL], "emoji": True}


def confirm_dialog(title: str, text: str, yes: str) -> dict[str, Any]:
    """The "are you sure?" of a button that ends something (`text` is safe mrkdwn)."""
    return {
        "title": plain_label(title),
        "text": {"type": "mrkdwn", "text": clip(text, 300)},
        "confirm": plain_label(yes),
        "deny": plain_label("Cancel"),
        "style": "danger",
    }
