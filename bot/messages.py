"""Every Slack message the bot sends, as pure functions from values to Block Kit + fallback text.

Safety rules, applied everywhere (so handlers never have to think about them):

* Every string that came from Asana or a user is escaped for mrkdwn (`&`, `<`, `>`) wherever it is
  placed in mrkdwn or in the fallback `text` (Slack renders that as mrkdwn too), so an organization
  named `<!channel>` pings nobody. Such strings are also flattened to one line and shortened, so
  they cannot add block quotes or blow the size limits.
* The only `<...>` constructs in our output are the ones built here: user mentions `<@U...>` and
  channel links `<#C...>` from ids that match Slack's id shape, and `<https://...|label>` links
  whose URL went through `sanitize_url`.
* Limits are enforced at the block builders: section text <= 3000, section fields <= 2000, header
  <= 150, button text <= 75, button url <= 3000, button value <= 2000, <= 50 blocks per message.
  Clipping never cuts an entity or a `<...>` construct in half.

Where the download URL goes: Asana's download link is a presigned URL with credentials in its query
string, valid about an hour. It is placed in a URL *button* and in one mrkdwn link in a section
(for clients that do not render buttons), and nowhere else. It is never put in the fallback `text`:
Slack shows `text` in push, desktop and e-mail notifications, where a credential-bearing link would
travel further than the channel and outlive the message.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from bot.models import LINK_VALIDITY, Export, ExportState, ProblemKind

DEFAULT_COMMAND = "/asana-export"
FRESH_LINK_ACTION = "fresh_link"
#: URL buttons also send a block_actions payload; the handler must ack this action id.
DOWNLOAD_ACTION = "download_link"

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
#: Rows shown by `render_watch_list`; the rest are summarised as "and N more".
MAX_LIST_ROWS = 50

# Budgets (in characters of the raw string, before escaping) for strings we do not control.
_GID_BUDGET = 64
_NAME_BUDGET = 150
_STATE_BUDGET = 60
_ASANA_MESSAGE_BUDGET = 300
_PROBLEM_BUDGET = 300
_COMMAND_BUDGET = 40

_ELLIPSIS = "…"
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
_CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,}")
_LINE_BREAKERS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
# Characters kept as they are in a URL: RFC 3986 reserved + unreserved, and `%` so that existing
# escapes survive. Everything else (space, `<`, `>`, `|`, quotes, backslash, non-ASCII...) is
# percent-encoded as UTF-8.
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~"

_STATE_EMOJI = {
    ExportState.PENDING: ":hourglass_flowing_sand:",
    ExportState.STARTED: ":gear:",
    ExportState.FINISHED: ":white_check_mark:",
    ExportState.ERROR: ":x:",
    ExportState.UNKNOWN: ":grey_question:",
    ExportState.GONE: ":wastebasket:",
}


@dataclass(frozen=True, slots=True)
class Message:
    """A rendered message: plain fallback text (never empty), blocks, and who sees it."""

    text: str
    blocks: list[dict[str, Any]]
    response_type: Literal["in_channel", "ephemeral"] | None = None

    def __post_init__(self) -> None:
        if not self.text:
            raise ValueError("Slack needs a non-empty fallback text")
        if len(self.blocks) > MAX_BLOCKS:
            raise ValueError(f"{len(self.blocks)} blocks; Slack allows {MAX_BLOCKS}")

    def to_ack(self) -> dict[str, Any]:
        """Keyword arguments for Bolt's `ack()` / `respond()`."""
        return {
            "text": self.text,
            "blocks": copy.deepcopy(self.blocks),
            "response_type": self.response_type,
        }

    def to_post(self) -> dict[str, Any]:
        """Keyword arguments (besides `channel`, `ts`) for `chat.postMessage` / `chat.update`."""
        return {"text": self.text, "blocks": copy.deepcopy(self.blocks)}


@dataclass(frozen=True, slots=True)
class WatchRow:
    """One line of `list`: an export watched by one channel."""

    gid: str
    organization_name: str | None
    state: ExportState
    since: datetime
    user_id: str | None = None
    channel_id: str | None = None
    next_check_at: datetime | None = None


# --------------------------------------------------------------------------- text primitives


def escape_mrkdwn(s: str) -> str:
    """Turn Slack's control characters into entities so the text is shown, never parsed."""
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(s: str, limit: int) -> str:
    """Shorten `s` to at most `limit` characters, marking the cut with an ellipsis."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if len(s) <= limit:
        return s
    return s[: limit - 1] + _ELLIPSIS


def sanitize_url(url: str) -> str | None:
    """Return `url` made safe for Slack (percent-encoded), or None unless it is http(s) with a host.

    The result contains no space, `<`, `>`, `|`, quote or non-ASCII character, so it cannot break
    `<url|label>` markup, and it still points where it pointed (only unsafe characters change).
    """
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url.strip())
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            return None
        port = parts.port  # raises ValueError on a port that is not a number in range
        netloc = parts.netloc
        if not netloc.isascii():
            # An international host name becomes its IDNA form, which is what browsers send.
            host = parts.hostname.encode("idna").decode("ascii")
            if ":" in host:  # an IPv6 literal keeps its brackets
                host = f"[{host}]"
            userinfo, _, _ = netloc.rpartition("@")
            netloc = (
                (f"{quote(userinfo, safe=':%')}@" if userinfo else "")
                + host
                + (f":{port}" if port is not None else "")
            )
    except (ValueError, UnicodeError):  # bad port, bad IPv6 literal, unencodable host
        return None
    rebuilt = urlunsplit(
        (
            parts.scheme.lower(),
            quote(netloc, safe=_URL_SAFE),
            quote(parts.path, safe=_URL_SAFE),
            quote(parts.query, safe=_URL_SAFE),
            quote(parts.fragment, safe=_URL_SAFE),
        )
    )
    return rebuilt


def safe_link(url: str, label: str) -> str | None:
    """Build a mrkdwn link `<url|label>` with a sanitized URL and escaped label; None if unsafe."""
    clean = sanitize_url(url)
    if clean is None:
        return None
    # Inside mrkdwn, `&` is still a control character: Slack decodes `&amp;` back in the URL.
    text = escape_mrkdwn(_inline(label)).replace("|", "¦") or "link"
    return f"<{escape_mrkdwn(clean)}|{text}>"


def user_mention(user_id: str | None) -> str | None:
    """`<@U...>` for a well-formed Slack user id, else None (a malformed id is never echoed)."""
    if user_id and _USER_ID.fullmatch(user_id):
        return f"<@{user_id}>"
    return None


def channel_mention(channel_id: str | None) -> str | None:
    """`<#C...>` for a well-formed public/private channel id, else None."""
    if channel_id and _CHANNEL_ID.fullmatch(channel_id):
        return f"<#{channel_id}>"
    return None


def _inline(s: str) -> str:
    """Flatten to one line: a newline in a name must not start a block quote or a list."""
    return _LINE_BREAKERS.sub(" ", s)


def _esc(s: str | None, limit: int, *, default: str = "") -> str:
    """Inline, truncate, then escape a foreign string (in that order: never cut an entity)."""
    if s is None:
        return default
    return escape_mrkdwn(truncate(_inline(s), limit))


def _code(s: str | None, limit: int = _GID_BUDGET) -> str:
    """Show a foreign string as inline code; backticks in it would end the code span early."""
    shown = _esc(s, limit).replace("`", "ˋ").strip()
    return f"`{shown}`" if shown else "(empty)"


def _clip(text: str, limit: int) -> str:
    """Cut mrkdwn to `limit` chars without leaving half an entity or half a `<...>` construct."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    while True:
        amp = cut.rfind("&")
        lt = cut.rfind("<")
        if amp != -1 and ";" not in cut[amp:]:
            cut = cut[:amp]
        elif lt != -1 and ">" not in cut[lt:]:
            cut = cut[:lt]
        else:
            return cut + _ELLIPSIS


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _utc(dt: datetime) -> datetime:
    """Naive datetimes are taken to be UTC (that is what the store and Asana give us)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def format_duration(seconds: float) -> str:
    """A human duration rounded to the minute: "52 minutes", "2 hours 5 minutes", "3 days"."""
    minutes = round(abs(seconds) / 60) if math.isfinite(seconds) else 0
    if minutes < 60:
        return _plural(minutes, "minute")
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return _plural(hours, "hour") + (f" {_plural(minutes, 'minute')}" if minutes else "")
    days, hours = divmod(hours, 24)
    return _plural(days, "day") + (f" {_plural(hours, 'hour')}" if hours else "")


def format_relative(dt: datetime, now: datetime) -> str:
    """ "just now", "3 minutes ago", "in 52 minutes", "2 days 1 hour ago"."""
    delta = (_utc(now) - _utc(dt)).total_seconds()
    if abs(delta) < 45:
        return "just now"
    span = format_duration(delta)
    return f"{span} ago" if delta > 0 else f"in {span}"


def format_absolute(dt: datetime) -> str:
    """ "2026-11-27 14:05 UTC": one unambiguous zone for a team spread over several."""
    return _utc(dt).strftime("%Y-%m-%d %H:%M UTC")


def format_timestamp(dt: datetime, now: datetime) -> str:
    """Absolute UTC plus relative: "2026-11-27 14:05 UTC (3 minutes ago)"."""
    return f"{format_absolute(dt)} ({format_relative(dt, now)})"


def _format_seconds(seconds: float | None) -> str | None:
    """ "12 s", "1.5 s", "3 minutes"; None when unknown or nonsensical."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    if seconds < 10:
        return f"{math.ceil(seconds * 10) / 10:g} s"
    if seconds < 120:
        return f"{math.ceil(seconds)} s"
    return f"about {format_duration(seconds)}"


# --------------------------------------------------------------------------- block builders


def _section(text: str, accessory: dict[str, Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "section",
        "text": {"type": "mrkdwn", "text": _clip(text, MAX_SECTION_TEXT)},
    }
    if accessory is not None:
        block["accessory"] = accessory
    return block


def _fields(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """A section of labelled values; labels are ours, values must already be escaped."""
    return {
        "type": "section",
        "fields": [
            {"type": "mrkdwn", "text": _clip(f"*{label}*\n{value}", MAX_FIELD_TEXT)}
            for label, value in pairs[:MAX_FIELDS]
        ],
    }


def _header(text: str) -> dict[str, Any]:
    """Headers only ever carry our own words: plain_text is not escaped, so no foreign strings."""
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": truncate(text, MAX_HEADER_TEXT), "emoji": True},
    }


def _context(*texts: str) -> dict[str, Any]:
    return {
        "type": "context",
        "elements": [
            {"type": "mrkdwn", "text": _clip(t, MAX_CONTEXT_TEXT)} for t in texts[:10] if t
        ],
    }


def _button(
    text: str,
    *,
    action_id: str,
    url: str | None = None,
    value: str | None = None,
    style: Literal["primary", "danger"] | None = None,
) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": truncate(text, MAX_BUTTON_TEXT), "emoji": True},
        "action_id": action_id,
    }
    if url is not None:
        button["url"] = url
    if value is not None:
        button["value"] = value
    if style is not None:
        button["style"] = style
    return button


def _actions(*elements: dict[str, Any] | None) -> dict[str, Any] | None:
    kept = [e for e in elements if e is not None]
    return {"type": "actions", "elements": kept} if kept else None


def _message(
    text: str,
    blocks: Iterable[dict[str, Any] | None],
    response_type: Literal["in_channel", "ephemeral"] | None = None,
) -> Message:
    kept = [b for b in blocks if b is not None][:MAX_BLOCKS]
    return Message(_clip(text, MAX_FALLBACK_TEXT) or "…", kept, response_type)


# --------------------------------------------------------------------------- shared pieces


def _state_label(export: Export) -> str:
    """Emoji and state; an unknown state shows Asana's raw value (escaped) so nothing is hidden."""
    emoji = _STATE_EMOJI[export.state]
    if export.state is ExportState.UNKNOWN:
        raw = export.raw_state
        shown = _code(raw, _STATE_BUDGET) if raw else "(none)"
        return f"{emoji} unknown state {shown}"
    return f"{emoji} {export.state.value}"


def _org_name(export: Export) -> str:
    name = (export.organization_name or "").strip()
    return _esc(name, _NAME_BUDGET) if name else "unknown organization"


def _org_label(export: Export) -> str:
    """Organization name and, when known, its gid."""
    name = _org_name(export)
    if export.organization_gid:
        return f"{name} ({_code(export.organization_gid)})"
    return name


def _requested(export: Export, now: datetime) -> str:
    return format_timestamp(export.created_at, now) if export.created_at else "unknown"


def _overview(export: Export, now: datetime) -> dict[str, Any]:
    return _fields(
        [
            ("State", _state_label(export)),
            ("Export", _code(export.gid)),
            ("Organization", _org_label(export)),
            ("Requested", _requested(export, now)),
        ]
    )


def _short(export: Export) -> str:
    """ "export `123` of Acme": how fallback texts name an export."""
    return f"export {_code(export.gid)} of {_org_name(export)}"


def _validity(valid_until: datetime, now: datetime) -> str:
    """ "Link valid until 15:05 UTC (about 1 hour)", or that it has already expired."""
    until, current = _utc(valid_until), _utc(now)
    shown = (
        until.strftime("%H:%M UTC") if until.date() == current.date() else format_absolute(until)
    )
    remaining = (until - current).total_seconds()
    if remaining <= 0:
        return f"The link expired at {shown}."
    return f"Link valid until {shown} (about {format_duration(remaining)})."


def _download(
    export: Export, now: datetime, valid_until: datetime
) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """The link section and the URL button for a usable download URL, or None if there is none."""
    if export.download_url is None:
        return None
    clean = sanitize_url(export.download_url)
    link = safe_link(export.download_url, "Download export") if clean else None
    if clean is None or link is None:
        return None
    validity = _validity(valid_until, now)
    fits_section = len(link) + len(validity) + 10 <= MAX_SECTION_TEXT
    button = (
        _button("Download export", action_id=DOWNLOAD_ACTION, url=clean, style="primary")
        if len(clean) <= MAX_BUTTON_URL
        else None
    )
    if not fits_section and button is None:
        return None
    section = _section(f":inbox_tray: {link}\n{validity}" if fits_section else validity)
    return section, button


def _fresh_link_button(gid: str) -> dict[str, Any] | None:
    """The button's value is the raw gid (never shown; the handler parses it back)."""
    if not gid or len(gid) > MAX_BUTTON_VALUE:
        return None
    return _button("Get a fresh link", action_id=FRESH_LINK_ACTION, value=gid)


_LINK_NOTE = "Asana download links expire about an hour after they are fetched."


# --------------------------------------------------------------------------- lookup answers


def render_export(
    export: Export,
    *,
    now: datetime,
    link_valid_until: datetime | None = None,
    command: str = DEFAULT_COMMAND,
    include_link: bool = True,
) -> Message:
    """The in-channel answer to a lookup: state, organization, requested time, and the link.

    A finished export's link goes in a URL button and a section link; not in `text` (see module
    docstring). With `include_link=False` (the channel may not see links) a "Get a fresh link"
    button shows it privately to whoever presses it.
    """
    valid_until = link_valid_until if link_valid_until is not None else now + LINK_VALIDITY
    blocks: list[dict[str, Any] | None] = [
        _header("Asana organization export"),
        _overview(export, now),
    ]
    retry = f"`{_esc(command, _COMMAND_BUDGET)} {_esc(export.gid, _GID_BUDGET)}`"
    match export.state:
        case ExportState.FINISHED if not include_link:
            blocks += [
                _section(
                    "Press *Get a fresh link* to see the download link (only you will see it)."
                ),
                _actions(_fresh_link_button(export.gid)),
                _context(_LINK_NOTE),
            ]
            text = f":white_check_mark: Asana {_short(export)} is finished."
        case ExportState.FINISHED:
            download = _download(export, now, valid_until)
            if download is not None:
                section, button = download
                blocks += [
                    section,
                    _actions(button),
                    _context(_LINK_NOTE + f" Run {retry} again for a new one."),
                ]
                text = (
                    f":white_check_mark: Asana {_short(export)} is finished: download link below."
                )
            else:
                blocks.append(
                    _section(
                        "The export is finished, but Asana has not given a usable download link"
                        f" yet. Ask again in a minute: {retry}"
                    )
                )
                text = f":white_check_mark: Asana {_short(export)} is finished; no link yet."
        case ExportState.ERROR:
            blocks.append(
                _section(
                    ":x: The export failed on Asana's side. Request a new export for this"
                    " organization."
                )
            )
            text = f":x: Asana {_short(export)} failed on Asana's side."
        case ExportState.PENDING | ExportState.STARTED:
            blocks.append(
                _context("Asana is still preparing this export; that takes minutes to hours.")
            )
            text = f"{_STATE_EMOJI[export.state]} Asana {_short(export)} is {export.state.value}."
        case _:
            blocks.append(
                _context(f"Asana reported a state this bot does not know. Ask again later: {retry}")
            )
            text = f":grey_question: Asana {_short(export)} is in an unknown state."
    return _message(text, blocks, "in_channel")


def render_looking_up(gid: str) -> Message:
    """The immediate ack when Asana is slower than Slack's 3-second deadline."""
    text = f":hourglass_flowing_sand: Looking up export {_code(gid)}…"
    return _message(text, [_section(text)], "ephemeral")


def render_lookup_timeout(gid: str, waited: float) -> Message:
    """The late answer when Asana never replied."""
    waited_s = _format_seconds(waited) or "the time allowed"
    text = (
        f":hourglass: Asana did not answer within {waited_s} while looking up export"
        f" {_code(gid)}. Try again in a minute."
    )
    return _message(text, [_section(text)], "ephemeral")


def render_internal_error() -> Message:
    """What the user sees when the bot itself broke: better than Slack's "operation_timeout"."""
    text = (
        ":warning: Something went wrong inside the bot. Try again; if it keeps happening,"
        " ask an admin to check the bot's logs."
    )
    return _message(text, [_section(text)], "ephemeral")


def render_database_unavailable(
    doing: Literal["watch", "unwatch", "list"], gid: str | None = None
) -> Message:
    """Ephemeral: the bot's database cannot be used (its file was deleted), so nothing was done."""
    what = {
        "watch": f"start watching export {_code(gid)}",
        "unwatch": f"stop watching export {_code(gid)}",
        "list": "list the watches",
    }[doing]
    text = (
        f":warning: The bot's database is unavailable, so I did not {what}."
        " Tell whoever runs the bot: its log says what happened, and it needs a restart."
    )
    return _message(text, [_section(text)], "ephemeral")


def _problem_parts(
    kind: ProblemKind, gid: str | None, retry_after: float | None
) -> tuple[str, str]:
    """(what went wrong, what to do) for a problem, in the user's terms."""
    export = f"export {_code(gid)}" if gid is not None else "the export"
    match kind:
        case ProblemKind.NOT_FOUND:
            return (
                f"No export with gid {_code(gid)} that this bot's Asana token can see."
                if gid is not None
                else "Asana found no such export.",
                "Check the gid from the export request (the `gid` in Asana's answer to"
                " `POST /organization_exports`).",
            )
        case ProblemKind.UNAUTHORIZED:
            return (
                "The bot's Asana token is invalid or revoked.",
                "An admin must set a new `ASANA_TOKEN` for the bot.",
            )
        case ProblemKind.PAYMENT_REQUIRED:
            return (
                "Asana refused: organization exports need an Enterprise or Enterprise+"
                " organization.",
                "The bot's `ASANA_TOKEN` must be a Service Account token of such an organization.",
            )
        case ProblemKind.FORBIDDEN:
            return (
                f"The bot's Asana token has no access to {export}.",
                "Exports can be read only with a Service Account token of the export's"
                " organization; an admin must set `ASANA_TOKEN` to one.",
            )
        case ProblemKind.RATE_LIMITED:
            wait = _format_seconds(retry_after)
            return (
                "Asana is rate limiting this bot.",
                f"Try again in {wait}." if wait else "Try again in a minute.",
            )
        case ProblemKind.ASANA_DOWN:
            return (
                "Asana is having trouble (it answered with a server error).",
                "Try again in a few minutes.",
            )
        case ProblemKind.TIMEOUT:
            return ("Asana did not answer in time.", "Try again in a minute.")
        case ProblemKind.CONNECTION:
            return (
                "The bot could not connect to Asana.",
                "Try again in a minute; if it keeps happening, an admin should check the bot's"
                " network access to app.asana.com.",
            )
        case ProblemKind.MALFORMED:
            return (
                "Asana sent an answer this bot could not understand.",
                "Try again; if it keeps happening, an admin should check the bot's logs.",
            )
        case ProblemKind.BAD_REQUEST:
            return (
                f"Asana rejected the request for {export} as invalid.",
                "Check the gid: it is the number Asana returned when the export was requested.",
            )
    return ("Asana reported a problem.", "Try again later.")  # pragma: no cover - enum is closed


def render_problem(
    kind: ProblemKind,
    *,
    gid: str | None,
    asana_message: str | None = None,
    retry_after: float | None = None,
) -> Message:
    """Ephemeral: what went wrong talking to Asana and what the user (or an admin) can do."""
    what, todo = _problem_parts(kind, gid, retry_after)
    blocks: list[dict[str, Any] | None] = [_section(f":warning: *{what}*\n{todo}")]
    if asana_message and asana_message.strip():
        blocks.append(
            _context(f"Asana said: “{_esc(asana_message.strip(), _ASANA_MESSAGE_BUDGET)}”")
        )
    return _message(f":warning: {what} {todo}", blocks, "ephemeral")


# --------------------------------------------------------------------------- usage and help


def _command_lines(command: str) -> list[str]:
    cmd = _esc(command, _COMMAND_BUDGET)
    return [
        f"• `{cmd} &lt;gid&gt;`: look up an export: state, organization and download link",
        f"• `{cmd} watch &lt;gid&gt;`: watch an export and post its link here when it is ready",
        f"• `{cmd} unwatch &lt;gid&gt;`: stop watching an export in this channel",
        f"• `{cmd} list`: exports watched in this channel",
        f"• `{cmd} list all`: exports watched anywhere in this workspace",
        f"• `{cmd} help`: more help",
    ]


def render_usage(problem: str | None = None, *, command: str = DEFAULT_COMMAND) -> Message:
    """Ephemeral usage, led by what was wrong with the input (which may quote the input)."""
    lines = _command_lines(command)
    blocks: list[dict[str, Any] | None] = []
    if problem and problem.strip():
        shown = _esc(problem.strip(), _PROBLEM_BUDGET)
        blocks.append(_section(f":warning: {shown}"))
        text = f":warning: {shown} Usage: `{_esc(command, _COMMAND_BUDGET)} &lt;gid&gt;`"
    else:
        text = f"Usage: `{_esc(command, _COMMAND_BUDGET)} &lt;gid&gt;`"
    blocks.append(_section("*Usage*\n" + "\n".join(lines)))
    return _message(text, blocks, "ephemeral")


def render_help(command: str = DEFAULT_COMMAND) -> Message:
    """Ephemeral help: what the bot does, its commands, and what it needs from Asana."""
    cmd = _esc(command, _COMMAND_BUDGET)
    blocks: list[dict[str, Any] | None] = [
        _header("Asana export bot"),
        _section(
            "Looks up Asana organization exports and tells this channel when one is ready,"
            " with a fresh download link."
        ),
        _section("*Commands*\n" + "\n".join(_command_lines(command))),
        _section(
            "*Good to know*\n"
            "• The gid is the number Asana returned when the export was requested"
            " (`POST /organization_exports`).\n"
            "• " + _LINK_NOTE + " Press *Get a fresh link* or look the export up again for a"
            " new one.\n"
            "• Exports take minutes to hours. The bot checks a watched export every few minutes"
            " and posts once when it is finished.\n"
            "• The bot's Asana token must be a Service Account token of an Enterprise or"
            " Enterprise+ organization."
        ),
        _context(f"Example: `{cmd} 1234567890123456`"),
    ]
    return _message(
        f"Asana export bot: `{cmd} &lt;gid&gt;` looks up an export.", blocks, "ephemeral"
    )


# --------------------------------------------------------------------------- watching


def render_status_card(
    export: Export,
    *,
    now: datetime,
    watchers: int | None = None,
    next_check_at: datetime | None = None,
) -> Message:
    """The card edited in place as the export moves; it never carries the download link.

    (The card lives for hours; the link dies after one. The link goes in a separate post.)
    """
    blocks: list[dict[str, Any] | None] = [
        _header("Asana organization export"),
        _overview(export, now),
    ]
    notes = [f"Last checked {format_absolute(now)}"]
    if not export.state.is_terminal and next_check_at is not None:
        notes.append(f"next check {format_relative(next_check_at, now)}")
    if watchers is not None and watchers > 0:
        notes.append(f"watched in {_plural(watchers, 'channel')}")
    match export.state:
        case ExportState.FINISHED:
            blocks.append(
                _section(
                    ":white_check_mark: Finished. The download link was posted in this channel;"
                    " press *Get a fresh link* there if it has expired."
                )
            )
            text = f":white_check_mark: Asana {_short(export)} is finished."
        case ExportState.ERROR:
            blocks.append(
                _section(
                    ":x: The export failed on Asana's side. Request a new export for this"
                    " organization."
                )
            )
            text = f":x: Asana {_short(export)} failed."
        case ExportState.UNKNOWN:
            text = f":grey_question: Asana {_short(export)} is in an unknown state."
        case _:
            text = f"{_STATE_EMOJI[export.state]} Asana {_short(export)} is {export.state.value}."
    blocks.append(_context(" · ".join(notes)))
    return _message(text, blocks)


def render_finished_post(
    export: Export,
    *,
    now: datetime,
    requester_user_id: str | None,
    link_valid_until: datetime,
    include_link: bool = True,
) -> Message:
    """The one post that says an export is ready: mentions the requester, carries the link.

    With `include_link=False` (or no usable URL) the link is not posted in the channel; the
    "Get a fresh link" button shows one privately to whoever presses it.
    """
    mention = user_mention(requester_user_id)
    lead = f"{mention} " if mention else ""
    ready = f"{lead}:white_check_mark: Asana {_short(export)} is ready."
    blocks: list[dict[str, Any] | None] = [_section(ready)]
    download = _download(export, now, link_valid_until) if include_link else None
    fresh = _fresh_link_button(export.gid)
    if download is not None:
        section, button = download
        blocks += [section, _actions(button, fresh), _context(_LINK_NOTE)]
    else:
        blocks += [
            _section("Press *Get a fresh link* to see the download link (only you will see it)."),
            _actions(fresh),
            _context(_LINK_NOTE),
        ]
    return _message(ready, blocks)


def render_fresh_link(export: Export, *, now: datetime, link_valid_until: datetime) -> Message:
    """Ephemeral answer to "Get a fresh link": a link just fetched, for the presser only."""
    if export.state is not ExportState.FINISHED:
        text = (
            f"{_STATE_EMOJI[export.state]} Asana {_short(export)} is not finished,"
            " so there is no download link."
        )
        return _message(text, [_section(text)], "ephemeral")
    download = _download(export, now, link_valid_until)
    if download is None:
        text = (
            f":warning: Asana gave no usable download link for {_short(export)}."
            " Try again in a minute."
        )
        return _message(text, [_section(text)], "ephemeral")
    section, button = download
    text = f":inbox_tray: Fresh download link for {_short(export)} below."
    return _message(text, [_section(text), section, _actions(button)], "ephemeral")


def render_export_failed(export: Export, *, now: datetime) -> Message:
    """Posted once when a watched export ends in `error`."""
    text = f":x: Asana {_short(export)} failed on Asana's side."
    blocks = [
        _section(f"{text} Request a new export for this organization."),
        _context(f"Requested {_requested(export, now)}"),
    ]
    return _message(text, blocks)


def render_export_gone(gid: str) -> Message:
    """Posted once when Asana stops knowing a watched export (404): the watch ends."""
    text = (
        f":grey_question: Asana no longer shows export {_code(gid)} to this bot (404)."
        " Stopped watching it."
    )
    return _message(text, [_section(text)])


def render_watch_paused(gid: str, kind: ProblemKind, *, command: str = DEFAULT_COMMAND) -> Message:
    """Posted once when a problem that needs a person pauses the watch of an export."""
    what, todo = _problem_parts(kind, gid, None)
    stop = f"`{_esc(command, _COMMAND_BUDGET)} unwatch {_esc(gid, _GID_BUDGET)}`"
    text = f":double_vertical_bar: Paused watching export {_code(gid)}: {what}"
    blocks = [
        _section(
            f"{text}\n{todo} The bot keeps checking now and then and resumes on its own once"
            f" Asana lets it in again; {stop} stops watching."
        )
    ]
    return _message(text, blocks)


def _watch_line(row: WatchRow, now: datetime, scope: str) -> str:
    parts = [
        _code(row.gid),
        _esc((row.organization_name or "").strip(), _NAME_BUDGET) or "unknown organization",
        f"{_STATE_EMOJI[row.state]} {row.state.value}",
    ]
    since = f"since {format_timestamp(row.since, now)}"
    who = user_mention(row.user_id)
    if who:
        since += f" by {who}"
    where = channel_mention(row.channel_id)
    if scope == "workspace" and where:
        since += f" in {where}"
    parts.append(since)
    if row.next_check_at is not None and not row.state.is_terminal:
        parts.append(f"next check {format_relative(row.next_check_at, now)}")
    return _clip("• " + " · ".join(parts), 1000)


def render_watch_list(
    rows: Sequence[WatchRow],
    *,
    now: datetime,
    scope: Literal["channel", "workspace"],
    command: str = DEFAULT_COMMAND,
    withheld: int = 0,
) -> Message:
    """Ephemeral list of watched exports, in the caller's order; long lists end in "and N more".

    `withheld` watches (in channels the asker is not in) are counted, never named.
    """
    where = "this channel" if scope == "channel" else "this workspace"
    header = _header(f"Watched exports in {where}")
    note = (
        _context(
            f"{withheld} more {'watch is' if withheld == 1 else 'watches are'} not shown:"
            " they are in channels you are not a member of."
        )
        if withheld
        else None
    )
    if not rows:
        text = (
            f"No exports are watched in {where}"
            + (" that you can see" if withheld else "")
            + f". Use `{_esc(command, _COMMAND_BUDGET)} watch &lt;gid&gt;` to watch one."
        )
        return _message(text, [header, _section(text), note], "ephemeral")
    shown = list(rows[:MAX_LIST_ROWS])
    sections: list[dict[str, Any]] = []
    current: list[str] = []
    placed = 0
    for row in shown:
        line = _watch_line(row, now, scope)
        if current and len("\n".join([*current, line])) > MAX_SECTION_TEXT:
            if len(sections) >= MAX_BLOCKS - 3:
                break
            sections.append(_section("\n".join(current)))
            current = []
        current.append(line)
        placed += 1
    if current:
        sections.append(_section("\n".join(current)))
    hidden = len(rows) - placed
    count = _plural(len(rows), "export")
    blocks: list[dict[str, Any] | None] = [header, *sections]
    if hidden:
        blocks.append(_context(f"…and {hidden} more."))
    blocks.append(note)
    return _message(f"{count} watched in {where}.", blocks, "ephemeral")


def render_watch_started(export: Export, *, now: datetime, next_check_at: datetime) -> Message:
    """Ephemeral confirmation: this channel now watches the export (the card is in channel)."""
    text = (
        f":eyes: Watching {_short(export)} for this channel. I will post a fresh download link"
        " here as soon as it is finished."
    )
    blocks = [
        _section(text),
        _overview(export, now),
        _context(f"Next check {format_relative(next_check_at, now)}"),
    ]
    return _message(text, blocks, "ephemeral")


def render_already_watching(
    export: Export, *, now: datetime, command: str = DEFAULT_COMMAND
) -> Message:
    """Ephemeral: asking again does not add a second watch."""
    cmd = _esc(command, _COMMAND_BUDGET)
    text = f":eyes: This channel already watches {_short(export)}."
    blocks = [
        _section(f"{text} `{cmd} list` shows this channel's watches."),
        _overview(export, now),
    ]
    return _message(text, blocks, "ephemeral")


def render_refused(*, what: str = "use this bot") -> Message:
    """Ephemeral, polite: access control said no (ALLOWED_USERS / ALLOWED_CHANNELS)."""
    text = (
        f":lock: Sorry, you cannot {what} here. An admin of this bot decides who may use it and"
        " in which channels; ask them to add you or this channel."
    )
    return _message(text, [_section(text)], "ephemeral")


def render_link_withheld(
    gid: str, *, foreign_user: bool, command: str = DEFAULT_COMMAND
) -> Message:
    """Ephemeral, polite: "Get a fresh link" gives no link to this clicker here, and what to do."""
    if foreign_user:
        text = (
            ":lock: Sorry, download links go only to members of the organization that installed"
            " this bot. Ask one of them for the export through your organizations' usual way of"
            " sharing files."
        )
    else:
        text = (
            ":lock: This channel is shared with another organization (or Slack would not tell me"
            " whether it is), so I do not hand out download links here. Ask me in a DM with me"
            " or in a private channel of your organization:"
            f" `{_esc(command, _COMMAND_BUDGET)} {_esc(gid, _GID_BUDGET)}`."
        )
    return _message(text, [_section(text)], "ephemeral")


def render_cannot_post(export: Export, *, now: datetime, error: str | None) -> Message:
    """Ephemeral: the bot may not post in this channel, so it cannot watch here; how to fix it."""
    reason = {
        "not_in_channel": "I am not a member of this channel.",
        "channel_not_found": "I cannot see this channel (it is private or a DM I am not in).",
        "is_archived": "This channel is archived.",
    }.get(error or "", f"Slack refused my message ({_esc(error, 60, default='unknown error')}).")
    text = f":no_entry: I cannot watch {_short(export)} here: {reason}"
    fix = (
        "Invite me with `/invite @asana-export` (or the channel's *Integrations* tab) and run"
        " the command again."
    )
    return _message(text, [_section(f"{text}\n{fix}"), _overview(export, now)], "ephemeral")


def render_unwatched(gid: str, *, found: bool, command: str = DEFAULT_COMMAND) -> Message:
    """Ephemeral answer to `unwatch`."""
    if found:
        text = f":white_check_mark: Stopped watching export {_code(gid)} in this channel."
    else:
        cmd = _esc(command, _COMMAND_BUDGET)
        text = (
            f"This channel does not watch export {_code(gid)}; nothing to stop."
            f" `{cmd} list` shows what it watches."
        )
    return _message(text, [_section(text)], "ephemeral")


def render_card_unwatched(export: Export, *, now: datetime) -> Message:
    """The card's last edit when its channel stops watching."""
    text = f":no_bell: No longer watching {_short(export)} in this channel."
    return _message(text, [_section(text), _overview(export, now)])


def render_slow_down(*, busy: bool, retry_after: int, per_minute: float | None = None) -> Message:
    """Ephemeral: a fair-use limit said not now (no Asana call was made); when to try again."""
    wait = _plural(max(1, int(retry_after)), "second")
    if busy:
        text = (
            f":hourglass_flowing_sand: Asana is busy right now; try again in {wait}."
            " (The bot keeps part of its Asana budget for watched exports.)"
        )
    else:
        limit = f"{per_minute:g} " if per_minute else ""
        text = (
            f":hourglass_flowing_sand: You have made {limit}requests in the last minute, the most"
            f" one person may; try again in {wait}."
        )
    return _message(text, [_section(text)], "ephemeral")


def render_watch_cap(
    gid: str, *, scope: Literal["user", "channel"], cap: int, command: str = DEFAULT_COMMAND
) -> Message:
    """Ephemeral: a new watch would pass MAX_WATCHES_PER_USER/_CHANNEL; how to free room."""
    cmd = _esc(command, _COMMAND_BUDGET)
    who = "You already watch" if scope == "user" else "This channel already watches"
    text = (
        f":no_entry: Not watching export {_code(gid)}: {who} {_plural(cap, 'export')}, the most"
        f" allowed. Stop one with `{cmd} unwatch &lt;gid&gt;` (`{cmd} list`"
        + (" all" if scope == "user" else "")
        + " shows them), then try again."
    )
    return _message(text, [_section(text)], "ephemeral")
