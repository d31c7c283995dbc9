"""What the bot says about archiving an export: progress on the card, where it landed, failure.

The location is the storage's own (`s3://bucket/prefix/...`, `file:///...`), as an operator
configured it: shown as inline code, escaped like any foreign string, never a link.
"""

from __future__ import annotations

from datetime import datetime

from bot.messages.blocks import Message, context, message, section
from bot.messages.exports import render_status_card
from bot.messages.mrkdwn import code
from bot.models import Export

#: How much of a location or a reason is shown (the rest is cut with "…").
LOCATION_BUDGET = 500
REASON_BUDGET = 500
_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def format_size(size: int) -> str:
    """Bytes as people read them, in decimal units: 950 B, 1.2 MB, 3.4 GB."""
    value = float(max(0, size))
    for unit in _UNITS:
        if value < 1000 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def progress_text(done: int, total: int | None) -> str:
    """`Archiving… 1.2 GB of 3.4 GB, 35%` (or just what arrived, when the size is unknown)."""
    if not total:
        return f"Archiving… {format_size(done)}"
    percent = min(100, int(done * 100 / total))
    return f"Archiving… {format_size(done)} of {format_size(total)}, {percent}%"


def _card_with(card: Message, line: str) -> Message:
    return message(card.text, [*card.blocks, context(line)])


def render_card_archiving(
    export: Export, *, now: datetime, watchers: int | None, done: int, total: int | None
) -> Message:
    """The finished export's status card while its archive streams."""
    card = render_status_card(export, now=now, watchers=watchers)
    return _card_with(card, f":inbox_tray: {progress_text(done, total)}")


def render_card_archived(
    export: Export, *, now: datetime, watchers: int | None, location: str
) -> Message:
    """The card once the archive is stored: where (the thread has the size and checksum)."""
    card = render_status_card(export, now=now, watchers=watchers)
    return _card_with(card, f":package: Archived to {code(location, LOCATION_BUDGET)}")


def render_archived(gid: str, *, location: str, size: int, sha256: str) -> Message:
    """The reply in the finished post's thread: where the export landed, its size and SHA-256."""
    text = (
        f":package: Export {code(gid)} is archived at {code(location, LOCATION_BUDGET)}"
        f" ({format_size(size)}, {size:,} bytes)."
    )
    return message(text, [section(text), context(f"SHA-256 {code(sha256, 64)}")])


def render_archive_failed(gid: str, *, reason: str) -> Message:
    """The one post about an archive that could not be made; the download link still works."""
    text = (
        f":warning: Export {code(gid)} could not be archived: {code(reason, REASON_BUDGET)}."
        " The export itself is fine: its download link can still be fetched for an hour at a"
        " time, and `asana-export-bot archive` can try again from a terminal."
    )
    return message(text, [section(text)])
