"""What the bot says after the fact in a watch's thread: an export that seems stalled, and the
finished post once its link has stopped working."""

from __future__ import annotations

from datetime import datetime

from bot.messages.blocks import Block, Message, actions, context, message, section
from bot.messages.mrkdwn import user_mention
from bot.messages.parts import fresh_link_button, short
from bot.messages.timefmt import as_utc, format_absolute, format_duration
from bot.models import Export

#: Where Asana says whether its service is degraded.
ASANA_STATUS_URL = "https://status.asana.com"


def render_stall_note(
    export: Export,
    *,
    running_since: datetime,
    now: datetime,
    every_seconds: float,
    requester_user_id: str | None,
) -> Message:
    """A note in the card's thread: the export has run for long, and what to check."""
    ran = format_duration((as_utc(now) - as_utc(running_since)).total_seconds())
    state = export.state.value
    lead = f":hourglass_flowing_sand: Asana {short(export)} has been {state} for {ran}."
    asker = user_mention(requester_user_id)
    checks = "\n".join(
        [
            "*What to check:*",
            f"• Asana's status page, <{ASANA_STATUS_URL}|status.asana.com>, for an incident.",
            "• The organization's size: a large organization's export can take many hours.",
            "• Ask your Asana admin (who owns the Service Account) whether the export is stuck;"
            " Asana support can look at it by its gid.",
        ]
        + ([f"• Requested by {asker}."] if asker else [])
    )
    foot = (
        f"Still watching. Next reminder in {format_duration(every_seconds)} if it is still"
        f" running (since {format_absolute(running_since)})."
    )
    blocks: list[Block | None] = [section(lead), section(checks), context(foot)]
    return message(lead, blocks)


def render_link_expired(
    export: Export, *, requester_user_id: str | None, expired_at: datetime
) -> Message:
    """The finished post once its link's hour is over: the link goes, the button stays."""
    mention = user_mention(requester_user_id)
    lead = f"{mention} " if mention else ""
    ready = f"{lead}:white_check_mark: Asana {short(export)} is ready."
    expired = (
        f":hourglass: The download link posted here expired at {format_absolute(expired_at)}."
        " Press *Get a fresh link* for a new one (only you will see it)."
    )
    blocks: list[Block | None] = [
        section(ready),
        section(expired),
        actions(fresh_link_button(export.gid)),
    ]
    return message(f"{ready} Its link expired at {format_absolute(expired_at)}.", blocks)


def carries_link(posted: Message) -> bool:
    """Did a rendered post put a download link where the channel sees it (a URL button or a
    link in a section)? Only such posts are edited when the link expires."""
    for block in posted.blocks:
        elements = block.get("elements", []) if block.get("type") == "actions" else []
        if any("url" in element for element in elements):
            return True
        text = (block.get("text") or {}).get("text", "") if block.get("type") == "section" else ""
        if "|Download export>" in text:
            return True
    return False
