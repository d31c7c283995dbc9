"""The audit trail: who started or stopped watching, created an export or a schedule, took a
fresh link, and where an export was archived.

Each action gives one structured log event (`audit` and its fields, in the JSON lines) and one
line in the thread of every card of that export (`bot.messages.render_audit_line`), posted
through the Notifier. Auditing never breaks what it records: a failure to post is logged and
dropped. Callers on a slash command's path use `later`, so the line costs the ack nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from bot import background, messages
from bot.followup_store import FollowupStore
from bot.messages import AuditAction, AuditEvent
from bot.models import Subscription

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

#: Message metadata event type of an audit line (tools and tests tell them from other posts).
AUDIT_EVENT_TYPE = "asana_export_audit"


def log_event(event: AuditEvent) -> None:
    """One INFO line per action, its fields in `extra` (JSON keys with LOG_FORMAT=json)."""
    fields = {
        "audit": event.action.value,
        "gid": event.gid,
        "user": event.user_id,
        "channel": event.channel_id,
        "detail": event.detail,
        "via": event.via,
    }
    log.info(
        "audit %s of export %s by %s",
        event.action.value,
        event.gid or "-",
        (event.user_id or "-")[:20],
        extra={"fields": {k: str(v) for k, v in fields.items() if v}},
    )


async def _threads(
    runtime: Runtime, event: AuditEvent, also: Iterable[Subscription]
) -> list[Subscription]:
    """The cards to reply under, one per channel (its newest), `also` first."""
    found = list(also)
    if event.gid:
        found += await FollowupStore(runtime.store).audit_threads(event.gid)
    seen: set[tuple[str, str]] = set()
    threads = []
    for sub in found:
        key = (sub.team_id, sub.channel_id)
        if sub.card_ts and key not in seen:
            seen.add(key)
            threads.append(sub)
    return threads


async def record(
    runtime: Runtime,
    event: AuditEvent,
    *,
    also: Iterable[Subscription] = (),
    channel_id: str | None = None,
) -> int:
    """Log `event` and post its line in each card's thread of the export (and of `also`: a watch
    that has just ended). `channel_id`: post there instead when there is no card (a schedule).
    Returns how many lines were posted. Never raises."""
    log_event(event)
    try:
        line = messages.render_audit_line(event)
        metadata = {
            "event_type": AUDIT_EVENT_TYPE,
            "event_payload": {"action": event.action.value, "gid": event.gid or ""},
        }
        posted = 0
        if channel_id is not None:
            result = await runtime.notify.post(channel_id, line, metadata=metadata)
            return int(result.ok)
        for sub in await _threads(runtime, event, also):
            result = await runtime.notify.post(
                sub.channel_id, line, metadata=metadata, thread_ts=sub.card_ts
            )
            posted += int(result.ok)
        return posted
    except Exception:
        log.warning("audit line for %s not posted", event.action.value, exc_info=True)
        return 0


def later(runtime: Runtime, event: AuditEvent, **options: object) -> None:
    """`record` in the background: for a listener that must ack first."""
    background.spawn(
        record(runtime, event, **options),  # type: ignore[arg-type]
        what=f"audit line {event.action.value}",
    )


# -- one function per audited action ------------------------------------------------------


def started_watching(runtime: Runtime, gid: str, *, user_id: str, channel_id: str) -> None:
    """A person watches `gid` in a channel (`watch`, a lookup, "Watch it instead")."""
    later(
        runtime,
        AuditEvent(
            AuditAction.WATCH_STARTED, gid, runtime.now(), user_id=user_id, channel_id=channel_id
        ),
    )


def stopped_watching(
    runtime: Runtime, ended: Subscription, *, user_id: str, via: str | None = None
) -> None:
    """A person ended a watch (`unwatch`, or via="button" for the App Home's Unwatch button)."""
    event = AuditEvent(
        AuditAction.WATCH_STOPPED,
        ended.export_gid,
        runtime.now(),
        user_id=user_id,
        channel_id=ended.channel_id,
        via=via,
    )
    later(runtime, event, also=[ended])


def created_export(
    runtime: Runtime, gid: str, *, user_id: str, channel_id: str, organization_gid: str
) -> None:
    """A person started an export with `new`."""
    event = AuditEvent(
        AuditAction.EXPORT_CREATED,
        gid,
        runtime.now(),
        user_id=user_id,
        channel_id=channel_id,
        detail=organization_gid,
    )
    later(runtime, event)


def created_schedule(
    runtime: Runtime, schedule_id: int, *, user_id: str, channel_id: str, summary: str
) -> None:
    """A person created a schedule; no card exists yet, so the line goes to its channel."""
    event = AuditEvent(
        AuditAction.SCHEDULE_CREATED,
        None,
        runtime.now(),
        user_id=user_id,
        channel_id=channel_id,
        detail=f"#{schedule_id}: {summary}",
    )
    later(runtime, event, channel_id=channel_id)


def fresh_link(runtime: Runtime, gid: str, *, user_id: str, channel_id: str) -> None:
    """A person was given a fresh download link ("Get a fresh link")."""
    later(
        runtime,
        AuditEvent(
            AuditAction.FRESH_LINK, gid, runtime.now(), user_id=user_id, channel_id=channel_id
        ),
    )


async def archived(runtime: Runtime, gid: str, location: str, *, user_id: str | None = None) -> int:
    """The archiver stored export `gid` at `location`, shown to the team: a query string (where a
    presigned URL keeps its credentials) is cut off first."""
    location = location.split("?", 1)[0]
    event = AuditEvent(AuditAction.ARCHIVED, gid, runtime.now(), user_id=user_id, detail=location)
    return await record(runtime, event)
