"""The Slack bot scopes the bot asks for, and what each one buys: the one list in the package.

manifest.yml ships in the repository, not in the wheel, so `doctor` reads this instead; a test
keeps the two equal. `need` says what a missing scope costs: the bot cannot work (ESSENTIAL), it
never shows a link unless LINK_POLICY=anywhere (LINKS: an unknown channel counts as shared), or it
works with less (HELPFUL).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Need(enum.StrEnum):
    """How much the bot depends on a scope."""

    ESSENTIAL = "essential"
    LINKS = "links"
    HELPFUL = "helpful"


@dataclass(frozen=True, slots=True)
class Scope:
    """One bot scope: its name, what it lets the bot do, and how much that matters."""

    name: str
    buys: str
    need: Need


#: What the history scopes buy, and what going without them costs, in one line.
HISTORY_SCOPES_NOTE = (
    "the history scopes let the bot find its own post after a crash, so it never posts twice;"
    " without them it still works, but a crash at the wrong moment can post an export twice"
)

_HISTORY = "finding its own post after a crash, so no duplicate"
_READ = (
    "telling private from shared conversations, without which no link is shown"
    " (unless LINK_POLICY=anywhere) and `list all` hides other channels' watches"
)

BOT_SCOPES: tuple[Scope, ...] = (
    Scope("commands", "the /asana-export slash command", Need.ESSENTIAL),
    Scope("chat:write", "posting and editing status cards", Need.ESSENTIAL),
    Scope("channels:history", f"{_HISTORY} (public channels)", Need.HELPFUL),
    Scope("groups:history", f"{_HISTORY} (private channels)", Need.HELPFUL),
    Scope("im:history", f"{_HISTORY} (DMs)", Need.HELPFUL),
    Scope("mpim:history", f"{_HISTORY} (group DMs)", Need.HELPFUL),
    Scope("channels:read", f"{_READ} (public channels)", Need.LINKS),
    Scope("groups:read", f"{_READ} (private channels)", Need.LINKS),
    Scope("im:read", f"{_READ} (DMs)", Need.LINKS),
    Scope("mpim:read", f"{_READ} (group DMs)", Need.LINKS),
    Scope(
        "users:read",
        "knowing the workspace's admins and owners (users.info), who may start exports with"
        " `new` when ADMIN_USERS is empty; without it only ADMIN_USERS may",
        Need.HELPFUL,
    ),
)

BOT_SCOPE_NAMES: tuple[str, ...] = tuple(scope.name for scope in BOT_SCOPES)
