"""Who may use the bot where, and where a download link may be posted: pure decisions."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

_SLACK_ID = re.compile(r"^[A-Z0-9]{2,40}$")


class LinkPolicy(enum.StrEnum):
    """Where the bot may post a download link (the whole organization's data) for all to see."""

    PRIVATE = "private"  # private channels, DMs and group DMs not shared with another org
    BUTTON = "button"  # never in a channel: a button shows it to whoever presses it
    ANYWHERE = "anywhere"  # every watching channel gets the link


def parse_id_list(raw: str) -> frozenset[str]:
    """`U123, U456` -> {"U123", "U456"}; raises ValueError naming the first bad entry."""
    ids = {part.strip() for part in raw.replace(";", ",").split(",") if part.strip()}
    for slack_id in ids:
        if not _SLACK_ID.match(slack_id):
            raise ValueError(f"{slack_id[:20]!r} is not a Slack ID (like U0123ABCD or C0123ABCD)")
    return frozenset(ids)


def is_allowed(
    user_id: str | None,
    channel_id: str | None,
    *,
    allowed_users: frozenset[str],
    allowed_channels: frozenset[str],
) -> bool:
    """Empty lists allow everyone; otherwise both the user and the channel must be listed."""
    if allowed_users and (user_id or "") not in allowed_users:
        return False
    return not (allowed_channels and (channel_id or "") not in allowed_channels)


def is_private_to_our_org(channel: Mapping[str, Any] | None) -> bool:
    """A private channel, DM or group DM that no other organization can read.

    Unknown (None: conversations.info failed) counts as not private: the safe answer.
    """
    if not channel:
        return False
    private = bool(channel.get("is_private") or channel.get("is_im") or channel.get("is_mpim"))
    shared_out = bool(
        channel.get("is_ext_shared")
        or channel.get("is_pending_ext_shared")
        or (channel.get("is_shared") and not channel.get("is_org_shared"))
    )
    return private and not shared_out


def may_post_link(policy: LinkPolicy, channel: Mapping[str, Any] | None) -> bool:
    """Whether the link itself may appear in a message everyone in the channel sees."""
    if policy is LinkPolicy.ANYWHERE:
        return True
    if policy is LinkPolicy.BUTTON:
        return False
    return is_private_to_our_org(channel)
