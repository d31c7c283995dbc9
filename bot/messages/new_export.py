"""The "New export" modal of the App Home: the organization gid and the channel to watch in."""

from __future__ import annotations

from typing import Any

from bot.messages.blocks import Block, section
from bot.messages.mrkdwn import GID_BUDGET
from bot.messages.views import View, plain_label

#: The modal's callback_id and its inputs (block_id, action_id).
NEW_EXPORT_CALLBACK = "home_new_export"
ORG_INPUT = ("organization", "organization_gid")
CHANNEL_INPUT = ("channel", "channel_id")


def render_new_export_modal(default_organization: str | None) -> View:
    """The "New export" modal: the organization gid (prefilled) and the channel to watch it in."""
    org_input: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": ORG_INPUT[1],
        "placeholder": {"type": "plain_text", "text": "e.g. 1200000000000001"},
        "max_length": GID_BUDGET,
    }
    if default_organization:
        org_input["initial_value"] = default_organization[:GID_BUDGET]
    channel_input = {
        "type": "conversations_select",
        "action_id": CHANNEL_INPUT[1],
        "placeholder": {"type": "plain_text", "text": "Pick a channel"},
        "filter": {"include": ["public", "private"], "exclude_bot_users": True},
    }
    blocks: list[Block] = [
        section(
            "Start an export of a whole Asana organization. I post its status card in the"
            " channel you pick and the download link there once it is ready."
        ),
        {
            "type": "input",
            "block_id": ORG_INPUT[0],
            "label": {"type": "plain_text", "text": "Organization gid"},
            "element": org_input,
        },
        {
            "type": "input",
            "block_id": CHANNEL_INPUT[0],
            "label": {"type": "plain_text", "text": "Watch it in"},
            "element": channel_input,
        },
    ]
    extra = {
        "callback_id": NEW_EXPORT_CALLBACK,
        "title": plain_label("New export"),
        "submit": plain_label("Start export"),
        "close": plain_label("Cancel"),
    }
    return View("modal", blocks, extra)
