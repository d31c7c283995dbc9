"""Stall nudge: an export still pending or started after STALL_AFTER gets one note in each
watching card's thread, repeated at most once per STALL_AFTER while it runs.

`stall_due` decides (pure, `now` given); `nudge_stalled` claims each note with a
compare-and-set (`bot.followup_store`) before posting it through the Notifier, so of several
replicas, and across a restart, one posts it. The note carries a once-key in its message
metadata (event type `asana_export_stalled`, the subscription and the note's number).
A replica that dies between its claim and its post leaves that note unsaid: the next one comes
STALL_AFTER later (a reply in a thread is not in conversations.history, where the finished
post's recovery looks).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot import messages
from bot.followup_store import FollowupStore, StallCandidate
from bot.models import ExportState
from bot.slack_out import Failure

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

#: States in which an export can be stalled (UNKNOWN is Asana's news, not a stall).
STALLABLE = (ExportState.PENDING, ExportState.STARTED)

#: Message metadata event type of a stall note: its once-key.
STALL_EVENT_TYPE = "asana_export_stalled"


def running_since(export_created_at: datetime | None, watched_since: datetime) -> datetime:
    """Since when the export has run: Asana's created_at, else since it was first watched."""
    return export_created_at or watched_since


def stall_due(
    *, since: datetime, last_noted: datetime | None, now: datetime, every: timedelta
) -> bool:
    """A note is due once the export has run `every`, and again each `every` after a note."""
    if now - since < every:
        return False
    return last_noted is None or now - last_noted >= every


async def nudge_stalled(runtime: Runtime) -> int:
    """One pass: post every due stall note this replica wins; how many were posted."""
    followups = FollowupStore(runtime.store)
    every = timedelta(seconds=runtime.settings.STALL_AFTER)
    posted = 0
    for candidate in await followups.stall_candidates(tuple(s.value for s in STALLABLE)):
        if runtime.notify.paused():
            break
        sub = candidate.subscription
        since = running_since(candidate.export.created_at, sub.created_at)
        if stall_due(
            since=since, last_noted=candidate.stall_noted_at, now=runtime.now(), every=every
        ):
            posted += await _nudge(runtime, followups, candidate, since=since, every=every)
    return posted


async def _nudge(
    runtime: Runtime,
    followups: FollowupStore,
    candidate: StallCandidate,
    *,
    since: datetime,
    every: timedelta,
) -> int:
    sub = candidate.subscription
    claimed_at = runtime.now()
    number = await followups.claim_stall(sub.id, now=claimed_at, every=every)
    if number is None:
        return 0  # another replica has it, or has just posted it
    note = messages.render_stall_note(
        candidate.export.to_export(),
        running_since=since,
        now=claimed_at,
        every_seconds=every.total_seconds(),
        requester_user_id=sub.user_id,
    )
    metadata = {
        "event_type": STALL_EVENT_TYPE,
        "event_payload": {"gid": sub.export_gid, "subscription_id": sub.id, "note": number},
    }
    result = await runtime.notify.post_in_thread(sub, note, metadata=metadata)
    if result.ok:
        await followups.record_stall(sub.id, claimed_at=claimed_at)
        log.info("stall note %d of export %s posted in %s", number, sub.export_gid, sub.channel_id)
        return 1
    if result.failure is Failure.CHANNEL:
        await followups.record_stall(sub.id, claimed_at=claimed_at)  # the watch has ended
        return 0
    await followups.release_stall(sub.id, claimed_at=claimed_at)  # try again next run
    log.info("stall note of export %s not posted (%s); retried later", sub.export_gid, result.error)
    return 0
