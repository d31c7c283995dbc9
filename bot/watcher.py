"""One tick of watching: claim due exports, poll each once, decide, tell the watching channels.

Every replica runs the same tick. The database lease makes each export polled by one replica at a
time, and the compare-and-set on `notified_at` makes each subscription's notification posted once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.exc import OperationalError

from bot import messages, slack_out
from bot.asana import AsanaClient, AsanaError
from bot.backoff import RetryPolicy
from bot.db import DatabaseUnavailable
from bot.decisions import (
    END_REASONS,
    Outcome,
    PollPolicy,
    plan_after_failure,
    plan_after_success,
)
from bot.models import LINK_VALIDITY, Export, ExportState, ProblemKind, Subscription
from bot.ratelimit import TokenBucket
from bot.slack_out import Failure
from bot.store import ExportRow, Store

log = logging.getLogger(__name__)

#: Message metadata event types: how a replica recognises its own earlier posts in history.
EVENT_TYPES = {
    Outcome.FINISHED: "asana_export_finished",
    Outcome.FAILED: "asana_export_failed",
    Outcome.GONE: "asana_export_gone",
}

#: A background poll retries little: the next tick is the retry, and the lease must outlive it.
POLL_RETRY = RetryPolicy(max_attempts=2, max_retry_time=5.0)


@dataclass(frozen=True, slots=True)
class WatcherConfig:
    """Timing of the watcher; all configurable so tests and benchmarks run in seconds."""

    policy: PollPolicy = field(default_factory=PollPolicy)
    lease: timedelta = timedelta(seconds=60)
    batch: int = 50
    concurrency: int = 10
    #: An unrecorded notification older than this is checked against the channel history.
    notify_grace: timedelta = timedelta(seconds=120)
    #: After Slack rejects the bot token, posting pauses this long, doubling up to the cap.
    slack_pause_initial: timedelta = timedelta(seconds=60)
    slack_pause_cap: timedelta = timedelta(hours=1)


class Watcher:
    """Polls Asana for watched exports and updates Slack; safe to run in several replicas."""

    def __init__(
        self,
        *,
        store: Store,
        asana: AsanaClient,
        slack: AsyncWebClient,
        links: slack_out.LinkGate,
        budget: TokenBucket,
        owner: str,
        config: WatcherConfig,
        now: Callable[[], datetime],
        rng: random.Random | None = None,
        command: str = messages.DEFAULT_COMMAND,
    ) -> None:
        self.store = store
        self.asana = asana
        self.slack = slack
        self.links = links
        self.budget = budget
        self.owner = owner
        self.config = config
        self.now = now
        self.rng = rng or random.Random()
        self.command = command
        self._tick_lock = asyncio.Lock()
        #: Set while Slack rejects our token: no posts until then (a person must reinstall).
        self.slack_paused_until: datetime | None = None
        self.slack_pause_reason: str | None = None
        self._slack_pause = config.slack_pause_initial
        self._recover_lock = asyncio.Lock()

    async def idle(self) -> None:
        """Return once no tick or recovery is running (for a clean shutdown)."""
        async with self._tick_lock, self._recover_lock:
            return

    async def release_leases(self) -> int:
        """Give back every lease this replica holds, so another replica polls at once."""
        return await self.store.release_leases(self.owner)

    # -- the tick ----------------------------------------------------------------------

    async def tick(self) -> int:
        """Claim and poll what is due; returns how many exports were polled. Never raises."""
        if self._tick_lock.locked():
            return 0
        async with self._tick_lock:
            try:
                return await self._tick()
            except DatabaseUnavailable as exc:
                # Its file was deleted: nothing to do until a restart, one line per tick.
                log.error("tick skipped: %s", exc)
                return 0
            except OperationalError as exc:
                # The database is restarting or locked: expected now and then, and the next
                # tick retries; one line each, not a traceback every TICK_SECONDS.
                log.warning("tick skipped, database unavailable: %s", _db_problem(exc))
                return 0
            except Exception:
                log.exception("tick failed; it will run again")
                return 0

    async def _tick(self) -> int:
        now = self.now()
        room = min(self.config.batch, self.budget.available())
        if room == 0:
            return 0
        rows = await self.store.claim_due(
            owner=self.owner, now=now, lease=self.config.lease, limit=room
        )
        if not rows:
            return 0
        gate = asyncio.Semaphore(self.config.concurrency)

        async def guarded(row: ExportRow) -> bool:
            async with gate:
                try:
                    return await self._poll(row)
                except DatabaseUnavailable:
                    raise  # the tick says it once; the lease expires by itself
                except Exception:
                    log.exception("poll of export %s failed; retrying later", row.gid)
                    retry_at = self.now() + timedelta(seconds=self.config.policy.initial)
                    await self.store.release(row.gid, owner=self.owner, next_poll_at=retry_at)
                    return False

        return sum(await asyncio.gather(*(guarded(row) for row in rows)))

    async def _poll(self, row: ExportRow) -> bool:
        if not self.budget.try_acquire():
            wait = self.budget.seconds_until_available()
            later = self.now() + timedelta(seconds=wait if math.isfinite(wait) else 60)
            await self.store.release(row.gid, owner=self.owner, next_poll_at=later)
            return False
        try:
            export = await self.asana.get_export(row.gid, policy=POLL_RETRY)
        except AsanaError as exc:
            await self._after_failure(row, exc)
            return True
        now = self.now()
        plan = plan_after_success(
            row.state,
            row.paused_reason is not None,
            row.poll_count,
            export,
            now=now,
            policy=self.config.policy,
            rng=self.rng,
        )
        await self.store.record_poll(
            row.gid,
            owner=self.owner,
            now=now,
            state=export.state,
            raw_state=export.raw_state,
            organization_gid=export.organization_gid,
            organization_name=export.organization_name,
            created_at=export.created_at,
            next_poll_at=plan.next_poll_at,
            error=None,
            paused_reason=None,
        )
        if plan.state_changed or export.state.is_terminal:
            await self._update_cards(export, next_check_at=plan.next_poll_at)
        if plan.outcome in (Outcome.FINISHED, Outcome.FAILED):
            await self.notify_all(export, plan.outcome)
        return True

    async def _after_failure(self, row: ExportRow, exc: AsanaError) -> None:
        now = self.now()
        plan = plan_after_failure(
            exc.kind,
            retry_after=exc.retry_after,
            consecutive_failures=row.consecutive_failures,
            paused_reason=row.paused_reason,
            now=now,
            policy=self.config.policy,
            rng=self.rng,
        )
        if exc.kind is ProblemKind.MALFORMED:  # says which: no `data`, or another export
            log.warning(
                "poll of export %s failed (%s): %s; %s", row.gid, exc.kind, plan.outcome, exc
            )
        else:
            log.info("poll of export %s failed (%s): %s", row.gid, exc.kind, plan.outcome)
        await self.store.record_poll(
            row.gid,
            owner=self.owner,
            now=now,
            state=None,
            raw_state=None,
            organization_gid=None,
            organization_name=None,
            created_at=None,
            next_poll_at=plan.next_poll_at,
            error=plan.error,
            paused_reason=plan.paused_reason,
        )
        if plan.outcome is Outcome.GONE:
            await self.notify_all(row.to_export(), Outcome.GONE)
        elif plan.announce_pause:
            await self._announce_pause(row, exc.kind)

    # -- telling channels ------------------------------------------------------------

    async def _after_slack(self, sub: Subscription, result: slack_out.SlackResult) -> None:
        """What every Slack call for a watch implies: a dead token pauses all posting, and a
        channel we can no longer use ends that watch (with the reason), never to be retried."""
        self._note_slack_result(result)
        if result.failure is Failure.CHANNEL:
            await self.store.end_subscription(
                sub.id, now=self.now(), reason=f"slack_{result.error}"
            )

    async def _update_cards(self, export: Export, *, next_check_at: datetime | None) -> None:
        subs = await self.store.active_subscriptions(export.gid)
        card = messages.render_status_card(
            export, now=self.now(), watchers=len(subs), next_check_at=next_check_at
        )
        for sub in subs:
            if sub.card_ts and not self.slack_paused():
                result = await slack_out.update(self.slack, sub.channel_id, sub.card_ts, card)
                await self._after_slack(sub, result)

    async def _announce_pause(self, row: ExportRow, kind: ProblemKind) -> None:
        message = messages.render_watch_paused(row.gid, kind, command=self.command)
        for sub in await self.store.active_subscriptions(row.gid):
            if self.slack_paused():
                return
            await self._after_slack(sub, await slack_out.post(self.slack, sub.channel_id, message))

    async def notify_all(self, export: Export, outcome: Outcome) -> None:
        """Tell every active subscription of `export` once; each ends when told."""
        for sub in await self.store.active_subscriptions(export.gid):
            await self.notify(sub, export, outcome)

    async def _notification(
        self, sub: Subscription, export: Export, outcome: Outcome
    ) -> messages.Message:
        now = self.now()
        if outcome is Outcome.FINISHED:
            include_link = await self.links.allowed(sub.channel_id)
            return messages.render_finished_post(
                export,
                now=now,
                requester_user_id=sub.user_id,
                link_valid_until=now + LINK_VALIDITY,
                include_link=include_link,
            )
        if outcome is Outcome.FAILED:
            return messages.render_export_failed(export, now=now)
        return messages.render_export_gone(export.gid)

    def slack_paused(self) -> bool:
        """True while Slack rejects our token: posting would fail the same way."""
        return self.slack_paused_until is not None and self.now() < self.slack_paused_until

    def _note_slack_result(self, result: slack_out.SlackResult) -> None:
        """Pause all posting on a dead token, with a growing pause; resume on any success."""
        if result.failure is Failure.TOKEN:
            self.slack_paused_until = self.now() + self._slack_pause
            self.slack_pause_reason = result.error
            log.error(
                "Slack rejected the bot token (%s): posting paused for %.0fs; reinstall the app"
                " and set a new SLACK_BOT_TOKEN. Watches are kept and will be told later.",
                result.error,
                self._slack_pause.total_seconds(),
            )
            self._slack_pause = min(self._slack_pause * 2, self.config.slack_pause_cap)
        elif result.ok and self.slack_paused_until is not None:
            log.info("Slack accepts the bot token again; posting resumed")
            self.slack_paused_until = self.slack_pause_reason = None
            self._slack_pause = self.config.slack_pause_initial

    async def notify(self, sub: Subscription, export: Export, outcome: Outcome) -> bool:
        """Post this subscription's one notification if this replica wins the right to."""
        if self.slack_paused():
            return False  # recovery tells it once the pause is over
        claimed_at = self.now()
        if not await self.store.try_mark_notified(sub.id, now=claimed_at):
            return False
        metadata = {
            "event_type": EVENT_TYPES[outcome],
            "event_payload": {"gid": export.gid, "subscription_id": sub.id},
        }
        message = await self._notification(sub, export, outcome)
        # The claim works as a lease: recovery takes over a claim older than notify_grace, so
        # this post must be over well before then (slack_sdk may be sleeping out a 429), or
        # both would post. Cut short, its outcome is unknown: recovery reads the history.
        deadline = self.config.notify_grace.total_seconds() / 2
        try:
            result = await asyncio.wait_for(
                slack_out.post(self.slack, sub.channel_id, message, metadata=metadata), deadline
            )
        except TimeoutError:
            log.warning(
                "posting to %s took over %.1fs; recovery will check the channel history",
                sub.channel_id,
                deadline,
            )
            return False
        await self._after_slack(sub, result)
        if result.ts is not None:
            await self.store.record_notified(
                sub.id, result.ts, now=self.now(), reason=END_REASONS[outcome]
            )
            log.info("notified subscription %s of export %s: %s", sub.id, export.gid, outcome)
            return True
        if result.failure is not Failure.CHANNEL:
            # Not posted: give the claim back so the recovery job tries again.
            await self.store.clear_notified(sub.id, claimed_at=claimed_at)
        return False

    # -- recovery ----------------------------------------------------------------------

    async def recover(self) -> None:
        """Finish notifications a crash interrupted, exactly once. Never raises."""
        if self._recover_lock.locked():
            return
        async with self._recover_lock:
            try:
                await self._recover_unrecorded()
                await self._recover_untold()
            except DatabaseUnavailable as exc:
                log.error("recovery skipped: %s", exc)
            except OperationalError as exc:
                log.warning("recovery skipped, database unavailable: %s", _db_problem(exc))
            except Exception:
                log.exception("recovery failed; it will run again")

    async def _recover_unrecorded(self) -> None:
        """Claimed but not recorded: if Slack has our post (by metadata), record it."""
        now = self.now()
        for sub in await self.store.unrecorded_notifications():
            assert sub.notified_at is not None
            if now - sub.notified_at < self.config.notify_grace:
                continue  # its poster may still be at work
            export_row = await self.store.get_export_row(sub.export_gid)
            outcome = _terminal_outcome(export_row)
            if outcome is None:
                continue
            oldest = (sub.notified_at - timedelta(minutes=5)).timestamp()
            try:
                ts = await slack_out.find_posted(
                    self.slack,
                    sub.channel_id,
                    event_type=EVENT_TYPES[outcome],
                    subscription_id=sub.id,
                    oldest=oldest,
                )
            except slack_out.HistoryUnavailable as exc:
                log.warning("cannot read history of %s to recover (%s)", sub.channel_id, exc)
                continue
            if ts is not None:
                await self.store.record_notified(sub.id, ts, now=now, reason=END_REASONS[outcome])
                log.info("recovered notification of subscription %s from history", sub.id)
            else:
                await self.store.clear_notified(sub.id, claimed_at=sub.notified_at)

    async def _recover_untold(self) -> None:
        """Active subscriptions of ended exports that nobody told: tell them now."""
        if self.slack_paused():
            return
        by_gid: dict[str, list[Subscription]] = {}
        for sub in await self.store.untold_subscriptions():
            by_gid.setdefault(sub.export_gid, []).append(sub)
        for gid, subs in by_gid.items():
            row = await self.store.get_export_row(gid)
            outcome = _terminal_outcome(row)
            if row is None or outcome is None:
                continue
            export = row.to_export()
            if outcome is Outcome.FINISHED:
                if not self.budget.try_acquire():
                    return
                try:
                    export = await self.asana.get_export(gid, policy=POLL_RETRY)  # fresh link
                except AsanaError as exc:
                    log.info("recovery fetch of export %s failed: %s", gid, exc.kind)
                    continue
                if export.state is not ExportState.FINISHED:
                    continue
            if outcome is not Outcome.GONE:
                # The poll that saw the end may have died before it edited every card.
                await self._update_cards(export, next_check_at=None)
            for sub in subs:
                await self.notify(sub, export, outcome)


def _db_problem(exc: OperationalError) -> str:
    """The driver's own complaint, first line only (it never holds a password)."""
    lines = str(exc.orig or exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _terminal_outcome(row: ExportRow | None) -> Outcome | None:
    if row is None:
        return None
    if row.state is ExportState.FINISHED:
        return Outcome.FINISHED
    if row.state is ExportState.ERROR:
        return Outcome.FAILED
    if row.last_error == ProblemKind.NOT_FOUND.value and row.next_poll_at is None:
        return Outcome.GONE
    return None
