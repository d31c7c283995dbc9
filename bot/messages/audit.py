"""Audit lines: one short message in a card's thread per thing a person (or the archiver) did
to an export, so the team sees who touched the organization's data."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from bot.messages.blocks import Message, context, message
from bot.messages.mrkdwn import NAME_BUDGET, channel_mention, code, esc, user_mention
from bot.messages.timefmt import format_absolute


class AuditAction(enum.StrEnum):
    """What happened; also the `audit` field of the log event."""

    WATCH_STARTED = "watch_started"
    WATCH_STOPPED = "watch_stopped"
    EXPORT_CREATED = "export_created"
    SCHEDULE_CREATED = "schedule_created"
    FRESH_LINK = "fresh_link"
    ARCHIVED = "archived"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audited action. `detail` is free text from a person or a system (a schedule's
    `when`, an archive location): rendered escaped, as code."""

    action: AuditAction
    #: The export; None for a schedule (it has none yet).
    gid: str | None
    at: datetime
    user_id: str | None = None
    channel_id: str | None = None
    detail: str | None = None
    #: How it was done when there are several ways ("button" for the App Home's Unwatch).
    via: str | None = None


#: Longest `detail` shown (a storage location can be long; the line stays one line).
DETAIL_BUDGET = 300


def _who(event: AuditEvent) -> str:
    return user_mention(event.user_id) or "Someone"


def _where(event: AuditEvent) -> str:
    mention = channel_mention(event.channel_id)
    return f" in {mention}" if mention else ""


def audit_sentence(event: AuditEvent) -> str:
    """The line, in mrkdwn: every foreign string escaped, users and channels as mentions."""
    who, where = _who(event), _where(event)
    detail = code(event.detail, DETAIL_BUDGET) if event.detail else None
    how = f" ({esc(event.via, NAME_BUDGET)})" if event.via else ""
    match event.action:
        case AuditAction.WATCH_STARTED:
            return f"{who} started watching this export{where}{how}."
        case AuditAction.WATCH_STOPPED:
            return f"{who} stopped watching this export{where}{how}."
        case AuditAction.EXPORT_CREATED:
            of = f" of organization {detail}" if detail else ""
            return f"{who} started this export{of}{where}."
        case AuditAction.SCHEDULE_CREATED:
            what = f" {detail}" if detail else ""
            return f"{who} created the schedule{what}{where}."
        case AuditAction.FRESH_LINK:
            return f"{who} got a fresh download link{where}."
        case AuditAction.ARCHIVED:
            to = f" to {detail}" if detail else ""
            by = f" by {user_mention(event.user_id)}" if user_mention(event.user_id) else ""
            return f"This export was archived{to}{by}."
    raise AssertionError(event.action)  # pragma: no cover - the enum is closed


def render_audit_line(event: AuditEvent) -> Message:
    """A one-line thread reply: `:memo: <sentence> · <when>`."""
    line = f":memo: {audit_sentence(event)} · {format_absolute(event.at)}"
    return message(line, [context(line)])
