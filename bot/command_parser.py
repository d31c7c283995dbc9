"""Parse the text of `/asana-export ...` into a command; pure, total, never raises."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

#: Asana gids are decimal strings; they grow, but 30 digits is far beyond any real one.
_MAX_GID_DIGITS = 30
_ASCII_DIGITS = re.compile(r"[0-9]+")
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
class New:
    """Start an organization export; `org_gid` None means ASANA_ORGANIZATION_GID."""

    org_gid: str | None = None
    force: bool = False


@dataclass(frozen=True, slots=True)
class Schedule:
    """`schedule <when> [tz ZONE] [org_gid]`: the spec as typed (bot.schedule_spec reads it)."""

    spec: str


@dataclass(frozen=True, slots=True)
class ListSchedules:
    workspace: bool = False


@dataclass(frozen=True, slots=True)
class Unschedule:
    schedule_id: int


@dataclass(frozen=True, slots=True)
class Help:
    pass


@dataclass(frozen=True, slots=True)
class Invalid:
    """What was wrong, in words for the user (may quote their input; the renderer escapes it)."""

    problem: str


Command = (
    Lookup
    | Watch
    | Unwatch
    | ListWatches
    | New
    | Schedule
    | ListSchedules
    | Unschedule
    | Help
    | Invalid
)

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
    """The gid in canonical form (`01234` -> `1234`, `000` -> `0`), or None.

    Canonical, so that one export is one watch, one request path and one button value
    however it was typed. Only ASCII digits count: `str.isdigit` also accepts Arabic-Indic
    or fullwidth digits, which are no gid Asana knows.
    """
    token = token.strip("`'\"")  # people paste gids in code spans or quotes
    if not _ASCII_DIGITS.fullmatch(token):
        return None
    canonical = token.lstrip("0") or "0"
    return canonical if len(canonical) <= _MAX_GID_DIGITS else None


def _not_a_gid(token: str, usage: str) -> Invalid:
    """Why `token` is no gid: too long, digits from another script, or not a number at all."""
    bare = token.strip("`'\"")
    if _ASCII_DIGITS.fullmatch(bare):
        return Invalid("That number is too long to be an export gid.")
    if bare.isdigit():  # digits, but not (all) ASCII ones: "١٢٣", fullwidth "１２３"
        return Invalid(
            f"`{_quote(token)}` is not a number: write the export gid with the digits 0-9."
        )
    return Invalid(f"`{_quote(token)}` is not an export gid{usage}: a gid is a number.")


_FORCE = ("--force", "-f", "force")


def _parse_new(rest: list[str]) -> Command:
    """`new [org_gid] [--force]`, the flag before or after the gid."""
    force = any(w.lower() in _FORCE for w in rest)
    others = [w for w in rest if w.lower() not in _FORCE]
    if len(others) > 1:
        return Invalid(
            "`new` takes at most one organization gid and `--force`,"
            " for example `new 1234567890` or `new --force`."
        )
    if not others:
        return New(None, force)
    gid = _parse_gid(others[0])
    if gid is None:
        bare = others[0].strip("`'\"")
        if _ASCII_DIGITS.fullmatch(bare):
            return Invalid("That number is too long to be an organization gid.")
        return Invalid(f"`{_quote(others[0])}` is not an organization gid: a gid is a number.")
    return New(gid, force)


_SCHEDULE_ID = re.compile(r"#?([0-9]{1,9})")


def _parse_schedules(verb: str, rest: list[str]) -> Command:
    """`schedule <when...>`, `schedules [all]`, `unschedule <id>`."""
    if verb == "schedule":
        if not rest:
            return Schedule("")  # the usage answer with its examples
        return Schedule(" ".join(rest))
    if verb == "schedules":
        if not rest:
            return ListSchedules(workspace=False)
        if [w.lower() for w in rest] == ["all"]:
            return ListSchedules(workspace=True)
        return Invalid(f"`schedules` takes nothing or `all`, not `{_quote(' '.join(rest))}`.")
    match = _SCHEDULE_ID.fullmatch(rest[0].strip("`'\"")) if len(rest) == 1 else None
    if match is None:
        return Invalid(
            "`unschedule` takes one schedule number, for example `unschedule 3`"
            " (`schedules` lists them)."
        )
    return Unschedule(int(match.group(1)))


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
    if verb == "new":
        return _parse_new(rest)
    if verb in ("schedule", "schedules", "unschedule"):
        return _parse_schedules(verb, rest)
    if verb in _GID_VERBS:
        if len(rest) != 1:
            return Invalid(
                f"`{verb}` takes exactly one export gid, for example `{verb} 1234567890`."
            )
        gid = _parse_gid(rest[0])
        if gid is None:
            return _not_a_gid(rest[0], "")
        return _GID_VERBS[verb](gid)
    if len(words) == 1:
        gid = _parse_gid(words[0])
        if gid is not None:
            return Lookup(gid)
        return _not_a_gid(words[0], " or a command")
    return Invalid(f"I did not understand `{_quote(cleaned)}`.")
