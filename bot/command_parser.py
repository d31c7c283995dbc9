"""Parse the text of `/asana-export ...` into a command; pure, total, never raises."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

#: Asana gids are decimal strings; they grow, but 30 digits is far beyond any real one.
_GID = re.compile(r"[0-9]{1,30}")
#: Slack-reported command text can be at most a few thousand chars; we only look at a prefix.
_MAX_LOOK = 200


@dataclass(frozen=True, slots=True)
class Lookup:
    gid: str


@dataclass(frozen=True, slots=True)
class Watch:
    gid: str


@dataclass(frozen=True, slots=True)
class Unwatch:
    gid: str


@dataclass(frozen=True, slots=True)
class ListWatches:
    workspace: bool = False


@dataclass(frozen=True, slots=True)
class Help:
    pass


@dataclass(frozen=True, slots=True)
class Invalid:
    """What was wrong, in words for the user (may quote their input; the renderer escapes it)."""

    problem: str


Command = Lookup | Watch | Unwatch | ListWatches | Help | Invalid

_GID_VERBS = {"watch": Watch, "unwatch": Unwatch}


def _clean(text: str | None) -> str:
    """Drop control and format characters Slack clients sometimes insert, fold whitespace."""
    if not text:
        return ""
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in text[: _MAX_LOOK * 5]
        if ch.isspace() or unicodedata.category(ch)[0] != "C"
    )
    return " ".join(kept.split())


def _quote(token: str) -> str:
    return token if len(token) <= 40 else token[:40] + "…"


def _parse_gid(token: str) -> str | None:
    token = token.strip("`'\"")  # people paste gids in code spans or quotes
    return token if _GID.fullmatch(token) else None


def parse_command(text: str | None) -> Command:
    """Turn the command text into a Command; anything unusable becomes Invalid with a reason."""
    cleaned = _clean(text)
    if not cleaned:
        return Invalid("Tell me which export to look up: an export gid is a number.")
    if len(cleaned) > _MAX_LOOK:
        return Invalid(f"That is too long for a command ({len(cleaned)} characters).")
    words = cleaned.split(" ")
    verb = words[0].lower()
    rest = words[1:]
    if verb in ("help", "-h", "--help", "?"):
        return Help()
    if verb == "list":
        if not rest:
            return ListWatches(workspace=False)
        if [w.lower() for w in rest] == ["all"]:
            return ListWatches(workspace=True)
        return Invalid(f"`list` takes nothing or `all`, not `{_quote(' '.join(rest))}`.")
    if verb in _GID_VERBS:
        if len(rest) != 1:
            return Invalid(
                f"`{verb}` takes exactly one export gid, for example `{verb} 1234567890`."
            )
        gid = _parse_gid(rest[0])
        if gid is None:
            return Invalid(f"`{_quote(rest[0])}` is not an export gid: a gid is a number.")
        return _GID_VERBS[verb](gid)
    if len(words) == 1:
        gid = _parse_gid(words[0])
        if gid is not None:
            return Lookup(gid)
        if words[0].strip("`'\"").isdigit():
            return Invalid("That number is too long to be an export gid.")
        return Invalid(
            f"`{_quote(words[0])}` is not an export gid or a command: a gid is a number."
        )
    return Invalid(f"I did not understand `{_quote(cleaned)}`.")
