"""Stall nudge: an export still pending or started after STALL_AFTER gets one note in each
watching card's thread, repeated at most once per STALL_AFTER while it runs.

`stall_due` and `claim_state` decide (pure, `now` given); `nudge_stalled` claims each note with
a compare-and-set (`bot.followup_store`) before posting it through the Notifier, so of several
replicas, and across a restart, one posts it. As with the finished post, the note carries a
once-key in its message metadata (event type `asana_export_stalled`, the subscription and the
note's number), which closes the crash window: a claim still unrecorded after
NOTIFY_GRACE_SECONDS is looked up in the card's thread (conversations.replies), recorded if
Slack has the note, and given back to be posted again if not.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot import messages, slack_out
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


class ClaimState(enum.Enum):
    """Where the last claimed stall note of a watch stands."""

    SETTLED = "settled"  # none claimed, or the last one claimed was recorded as posted
    IN_FLIGHT = "in_flight"  # claimed moments ago: its replica may still be posting it
    ORPHANED = "orphaned"  # claimed long ago and never recorded: its replica died around it


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


def claim_state(
    *, claimed_at: datetime | None, noted_at: datetime | None, now: datetime, grace: timedelta
) -> ClaimState:
    """A claim is recorded when `noted_at` caught up with it; unrecorded past `grace`, orphaned."""
    if claimed_at is None or claimed_at == noted_at:
        return ClaimState.SETTLED
    return ClaimState.IN_FLIGHT if now - claimed_at < grace else ClaimState.ORPHANED


async def nudge_stalled(runtime: Runtime) -> int:
    """One pass: post every due stall note this replica wins; how many were posted."""
    followups = FollowupStore(runtime.store)
    every = timedelta(seconds=runtime.settings.STALL_AFTER)
    grace = timedelta(seconds=runtime.settings.NOTIFY_GRACE_SECONDS)
    posted = 0
    states = tuple(s.value for s in STALLABLE)
    for candidate in await followups.stall_candidates(states, now=runtime.now(), every=every):
        if runtime.notify.paused():
            break
        sub = candidate.subscription
        state = claim_state(
            claimed_at=candidate.stall_claimed_at,
            noted_at=candidate.stall_noted_at,
            now=runtime.now(),
            grace=grace,
        )
        if state is ClaimState.IN_FLIGHT:
            continue
        if state is ClaimState.ORPHANED and not await _settle_orphan(runtime, followups, candidate):
            continue
        since = running_since(candidate.export.created_at, sub.created_at)
        last = candidate.stall_noted_at
        if stall_due(since=since, last_noted=last, now=runtime.now(), every=every):
            posted += await _nudge(runtime, followups, candidate, since=since, every=every)
    return posted


async def _settle_orphan(
    runtime: Runtime, followups: FollowupStore, candidate: StallCandidate
) -> bool:
    """A dead replica's claim: record its note if Slack has it, else give the claim back.

    True when the claim was given back (a note may be claimed again now).
    """
    sub, claimed_at = candidate.subscription, candidate.stall_claimed_at
    assert claimed_at is not None and sub.card_ts is not None
    note = candidate.stall_notes + 1
    try:
        ts = await slack_out.find_reply(
            runtime.slack,
            sub.channel_id,
            sub.card_ts,
            event_type=STALL_EVENT_TYPE,
            payload={"subscription_id": sub.id, "note": note},
        )
    except slack_out.HistoryUnavailable as exc:
        log.warning(
            "cannot read the thread of %s to recover a stall note (%s)", sub.channel_id, exc
        )
        return False
    if ts is not None:
        await followups.record_stall(sub.id, claimed_at=claimed_at)
        log.info("recovered stall note %d of export %s from its thread", note, sub.export_gid)
        return False
    return await followups.release_stall(sub.id, claimed_at=claimed_at)


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
    # The claim works as a lease: after the grace another replica reads the thread, so the post
    # must be over well before then. Cut short, its outcome is unknown: that reading settles it.
    deadline = runtime.settings.NOTIFY_GRACE_SECONDS / 2
    try:
        result = await asyncio.wait_for(
            runtime.notify.post_in_thread(sub, note, metadata=metadata), deadline
        )
    except TimeoutError:
        log.warning(
            "stall note of export %s took over %.1fs; checked later", sub.export_gid, deadline
        )
        return 0
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
