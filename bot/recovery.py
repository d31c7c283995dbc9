"""Finishing notifications that a crash (or a Slack outage) interrupted, exactly once.

Two gaps are closed, both found in the database and never guessed:

- claimed but not recorded: a replica won the right to post and died around the post. After
  NOTIFY_GRACE_SECONDS the channel history says whether Slack has it (by its once-key): record
  it, or give the claim back so the post is made again;
- never told: the poll that saw the end was recorded, but nobody was told (a crash, or posting
  was paused). Tell them now, with a freshly fetched link for a finished export.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy.exc import OperationalError

from bot import slack_out
from bot.archive.queue import enqueue_archive
from bot.asana import AsanaError
from bot.backoff import RetryPolicy
from bot.db import DatabaseUnavailable, describe_operational_error
from bot.decisions import END_REASONS, Outcome, ended_outcome
from bot.models import ExportState, Subscription
from bot.runtime import Runtime

log = logging.getLogger(__name__)

#: A background fetch retries little: the next run is the retry.
RECOVERY_RETRY = RetryPolicy(max_attempts=2, max_retry_time=5.0)


class Recovery:
    """The recovery job of one replica; safe to run in several replicas at once."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._lock = asyncio.Lock()

    async def idle(self) -> None:
        """Return once no recovery is running (for a clean shutdown)."""
        async with self._lock:
            return

    async def run(self) -> None:
        """One pass over both gaps. Never raises."""
        if self._lock.locked():
            return
        async with self._lock:
            try:
                await self._recover_unrecorded()
                await self._recover_untold()
            except DatabaseUnavailable as exc:
                log.error("recovery skipped: %s", exc)
            except OperationalError as exc:
                log.warning(
                    "recovery skipped, database unavailable: %s", describe_operational_error(exc)
                )
            except Exception:
                log.exception("recovery failed; it will run again")

    async def _recover_unrecorded(self) -> None:
        """Claimed but not recorded: if Slack has our post (by metadata), record it."""
        rt = self.runtime
        grace = timedelta(seconds=rt.settings.NOTIFY_GRACE_SECONDS)
        now = rt.now()
        for sub in await rt.store.unrecorded_notifications():
            assert sub.notified_at is not None
            if now - sub.notified_at < grace:
                continue  # its poster may still be at work
            row = await rt.store.get_export_row(sub.export_gid)
            outcome = ended_outcome(row.state) if row is not None else None
            if outcome is None:
                continue
            oldest = (sub.notified_at - timedelta(minutes=5)).timestamp()
            try:
                ts = await rt.notify.find_notification(sub, outcome, oldest=oldest)
            except slack_out.HistoryUnavailable as exc:
                log.warning("cannot read history of %s to recover (%s)", sub.channel_id, exc)
                continue
            if ts is not None:
                await rt.store.record_notified(sub.id, ts, now=now, reason=END_REASONS[outcome])
                log.info("recovered notification of subscription %s from history", sub.id)
            else:
                await rt.store.clear_notified(sub.id, claimed_at=sub.notified_at)

    async def _recover_untold(self) -> None:
        """Active subscriptions of ended exports that nobody told: tell them now."""
        rt = self.runtime
        if rt.notify.paused():
            return
        by_gid: dict[str, list[Subscription]] = {}
        for sub in await rt.store.untold_subscriptions():
            by_gid.setdefault(sub.export_gid, []).append(sub)
        for gid, subs in by_gid.items():
            row = await rt.store.get_export_row(gid)
            outcome = ended_outcome(row.state) if row is not None else None
            if row is None or outcome is None:
                continue
            export = row.to_export()
            if outcome is Outcome.FINISHED:
                if not rt.budget.try_acquire():
                    return
                try:
                    export = await rt.asana.get_export(gid, policy=RECOVERY_RETRY)  # fresh link
                except AsanaError as exc:
                    log.info("recovery fetch of export %s failed: %s", gid, exc.kind)
                    continue
                if export.state is not ExportState.FINISHED:
                    continue
                await enqueue_archive(rt, export)  # the poll that saw it finish died first
            if outcome is not Outcome.GONE:
                # The poll that saw the end may have died before it edited every card.
                await rt.notify.update_cards(export, next_check_at=None)
            for sub in subs:
                await rt.notify.notify(sub, export, outcome)
