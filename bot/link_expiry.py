"""Link expiry: once a finished post's link has stopped working (LINK_VALIDITY after it was
fetched), the post is edited: the link goes, it says when it expired, the "Get a fresh link"
button stays. Only posts that carried a link are edited (LINK_POLICY may have withheld it).

`edit_outcome` decides what a Slack answer means (pure). Each edit is claimed with a
compare-and-set (`bot.followup_store`) so one replica makes it. chat.update is idempotent: a
claim whose replica died before recording the edit is taken over after NOTIFY_GRACE_SECONDS
and the same edit made again, so every such post ends up edited, and edited once in the usual
case.
"""

from __future__ import annotations

import enum
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from bot import messages
from bot.followup_store import ExpiryCandidate, FollowupStore
from bot.slack_out import Failure, SlackResult

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

#: Slack's answers meaning the post can never be edited (deleted, too old, not ours).
_UNEDITABLE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})


class EditOutcome(enum.Enum):
    """What one chat.update answer means for the expiry of that post."""

    DONE = "done"  # edited, or never editable: do not try again
    RETRY = "retry"  # give the claim back; the next run tries again


def edit_outcome(result: SlackResult) -> EditOutcome:
    """Edited, or lost for good (channel gone, message deleted): done; else try again later."""
    if result.ok or result.failure is Failure.CHANNEL or result.error in _UNEDITABLE:
        return EditOutcome.DONE
    return EditOutcome.RETRY


async def expire_links(runtime: Runtime) -> int:
    """One pass: edit every finished post whose link has expired and this replica claims."""
    followups = FollowupStore(runtime.store)
    edited = 0
    for candidate in await followups.expiry_candidates(runtime.now()):
        if runtime.notify.paused():
            break
        edited += await _expire(runtime, followups, candidate)
    return edited


async def _expire(runtime: Runtime, followups: FollowupStore, candidate: ExpiryCandidate) -> int:
    sub = candidate.subscription
    assert sub.notified_ts is not None
    now = runtime.now()
    grace = timedelta(seconds=runtime.settings.NOTIFY_GRACE_SECONDS)
    if not await followups.claim_expiry(sub.id, now=now, stale_before=now - grace):
        return 0
    post = messages.render_link_expired(
        candidate.export.to_export(),
        requester_user_id=sub.user_id,
        expired_at=candidate.link_until,
    )
    result = await runtime.notify.update(sub.channel_id, sub.notified_ts, post)
    if edit_outcome(result) is EditOutcome.RETRY:
        await followups.release_expiry(sub.id, claimed_at=now)
        log.info("expired link of export %s not edited yet (%s)", sub.export_gid, result.error)
        return 0
    await followups.record_expired(sub.id, now=now)
    if not result.ok:
        log.info("finished post of export %s cannot be edited (%s)", sub.export_gid, result.error)
        return 0
    log.info(
        "expired link removed from the post of export %s in %s", sub.export_gid, sub.channel_id
    )
    return 1
