"""Pieces that several renderers share: how an export is named, summed up and linked.

Where the download URL goes: Asana's download link is a presigned URL with credentials in its query
string, valid about an hour. `download` places it in a URL *button* and in one mrkdwn link in a
section (for clients that do not render buttons), and nowhere else. It is never put in a fallback
`text`: Slack shows `text` in push, desktop and e-mail notifications, where a credential-bearing
link would travel further than the channel and outlive the message.
"""

from __future__ import annotations

from datetime import datetime

from bot.messages.blocks import (
    MAX_BUTTON_URL,
    MAX_BUTTON_VALUE,
    MAX_SECTION_TEXT,
    Block,
    actions,
    button,
    context,
    fields,
    header,
    section,
)
from bot.messages.mrkdwn import NAME_BUDGET, STATE_BUDGET, code, esc, safe_link, sanitize_url
from bot.messages.timefmt import as_utc, format_absolute, format_duration, format_timestamp
from bot.models import Export, ExportState

DEFAULT_COMMAND = "/asana-export"
FRESH_LINK_ACTION = "fresh_link"
#: URL buttons also send a block_actions payload; the handler must ack this action id.
DOWNLOAD_ACTION = "download_link"

STATE_EMOJI = {
    ExportState.PENDING: ":hourglass_flowing_sand:",
    ExportState.STARTED: ":gear:",
    ExportState.FINISHED: ":white_check_mark:",
    ExportState.ERROR: ":x:",
    ExportState.UNKNOWN: ":grey_question:",
    ExportState.GONE: ":wastebasket:",
}

LINK_NOTE = "Asana download links expire about an hour after they are fetched."
FAILED_ADVICE = ":x: The export failed on Asana's side. Request a new export for this organization."


def state_label(export: Export) -> str:
    """Emoji and state; an unknown state shows Asana's raw value (escaped) so nothing is hidden."""
    emoji = STATE_EMOJI[export.state]
    if export.state is ExportState.UNKNOWN:
        raw = export.raw_state
        shown = code(raw, STATE_BUDGET) if raw else "(none)"
        return f"{emoji} unknown state {shown}"
    return f"{emoji} {export.state.value}"


def org_name(name: str | None) -> str:
    """An organization's name as shown, or "unknown organization" when Asana gave none."""
    name = (name or "").strip()
    return esc(name, NAME_BUDGET) if name else "unknown organization"


def org_label(export: Export) -> str:
    """Organization name and, when known, its gid."""
    name = org_name(export.organization_name)
    if export.organization_gid:
        return f"{name} ({code(export.organization_gid)})"
    return name


def requested(export: Export, now: datetime) -> str:
    return format_timestamp(export.created_at, now) if export.created_at else "unknown"


def overview(export: Export, now: datetime) -> Block:
    return fields(
        [
            ("State", state_label(export)),
            ("Export", code(export.gid)),
            ("Organization", org_label(export)),
            ("Requested", requested(export, now)),
        ]
    )


def card_head(export: Export, now: datetime) -> list[Block | None]:
    """The header and overview that open the lookup answer and the status card."""
    return [header("Asana organization export"), overview(export, now)]


def short(export: Export) -> str:
    """ "export `123` of Acme": how fallback texts name an export."""
    return f"export {code(export.gid)} of {org_name(export.organization_name)}"


def state_sentence(export: Export) -> str:
    """ ":gear: Asana export `123` of Acme is started.": the export's state in one line."""
    if export.state is ExportState.UNKNOWN:
        return f":grey_question: Asana {short(export)} is in an unknown state."
    return f"{STATE_EMOJI[export.state]} Asana {short(export)} is {export.state.value}."


def validity(valid_until: datetime, now: datetime) -> str:
    """ "Link valid until 15:05 UTC (about 1 hour)", or that it has already expired."""
    until, current = as_utc(valid_until), as_utc(now)
    shown = (
        until.strftime("%H:%M UTC") if until.date() == current.date() else format_absolute(until)
    )
    remaining = (until - current).total_seconds()
    if remaining <= 0:
        return f"The link expired at {shown}."
    return f"Link valid until {shown} (about {format_duration(remaining)})."


def download(
    export: Export, now: datetime, valid_until: datetime
) -> tuple[Block, Block | None] | None:
    """The link section and the URL button for a usable download URL, or None if there is none."""
    if export.download_url is None:
        return None
    clean = sanitize_url(export.download_url)
    link = safe_link(export.download_url, "Download export") if clean else None
    if clean is None or link is None:
        return None
    until = validity(valid_until, now)
    fits_section = len(link) + len(until) + 10 <= MAX_SECTION_TEXT
    url_button = (
        button("Download export", action_id=DOWNLOAD_ACTION, url=clean, style="primary")
        if len(clean) <= MAX_BUTTON_URL
        else None
    )
    if not fits_section and url_button is None:
        return None
    return section(f":inbox_tray: {link}\n{until}" if fits_section else until), url_button


def fresh_link_button(gid: str) -> Block | None:
    """The button's value is the raw gid (never shown; the handler parses it back)."""
    if not gid or len(gid) > MAX_BUTTON_VALUE:
        return None
    return button("Get a fresh link", action_id=FRESH_LINK_ACTION, value=gid)


def fresh_link_only(gid: str) -> list[Block | None]:
    """Instead of a link the channel may not see: a button that shows it to the presser alone."""
    return [
        section("Press *Get a fresh link* to see the download link (only you will see it)."),
        actions(fresh_link_button(gid)),
        context(LINK_NOTE),
    ]
