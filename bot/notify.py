"""The one way the bot posts and edits Slack messages, and what Slack's answers imply.

Every chat.postMessage and chat.update goes through `Notifier`, whoever asks (the watcher, the
recovery job, the slash command), and so do the App Home's views.publish and views.open. So one
place keeps:

- the token pause: Slack rejected our token, so nothing is posted until a growing pause is over
  (a person must reinstall the app); any success ends it;
- the once-key: a watch's notification carries message metadata naming its subscription, and is
  posted only by whoever wins the compare-and-set on `notified_at`;
- the link policy (LINK_POLICY, `links`);
- ending a watch whose channel Slack will no longer let us use.

`bot.decisions` decides whether to tell, `bot.messages` renders what is said; this delivers it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot import fanout_records, messages, slack_out
from bot.decisions import END_REASONS, Outcome
from bot.followup_store import FollowupStore
from bot.messages import CardOrigin
from bot.models import LINK_VALIDITY, EndReason, Export, ProblemKind, Subscription
from bot.schedule_cards import card_origins
from bot.slack_out import Failure, LinkGate, SlackResult

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

#: Notifications of one export posted at once (one wave). Each goes to a different channel (a
#: channel has one active watch of an export), so chat.postMessage's limit, about one message
#: per second per channel with short bursts allowed (Slack's "special" tier, docs: Web API rate
#: limits), is never approached; the bound keeps the app's burst against the workspace-wide
#: limit small, and a 429 is still slept out by slack_sdk's retry handler per request.
FANOUT_CONCURRENCY = 20

#: Message metadata event types: how a replica recognises its own earlier posts in history.
EVENT_TYPES = {
    Outcome.FINISHED: "asana_export_finished",
    Outcome.FAILED: "asana_export_failed",
    Outcome.GONE: "asana_export_gone",
}


@dataclass(frozen=True, slots=True)
class SlackStatus:
    """Whether posting is paused (Slack rejects our token), why, and until when."""

    paused: bool
    reason: str | None = None
    until: datetime | None = None


class Notifier:
    """Delivers every Slack post and edit of one process; shared through the `Runtime`."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        pause_initial: timedelta = timedelta(seconds=60),
        pause_cap: timedelta = timedelta(hours=1),
    ) -> None:
        self._rt = runtime
        self.links = LinkGate(runtime.slack, runtime.settings.LINK_POLICY)
        self._followups = FollowupStore(runtime.store)
        self._pause_initial = pause_initial
        self._pause_cap = pause_cap
        self._pause = pause_initial
        self._paused_until: datetime | None = None
        self._pause_reason: str | None = None

    # -- the token pause ----------------------------------------------------------------

    def paused(self) -> bool:
        """True while Slack rejects our token: posting would fail the same way."""
        return self._paused_until is not None and self._rt.now() < self._paused_until

    def status(self) -> SlackStatus:
        """For /healthz and /readyz: is posting paused, and why."""
        if not self.paused():
            return SlackStatus(paused=False)
        return SlackStatus(paused=True, reason=self._pause_reason, until=self._paused_until)

    def _note(self, result: SlackResult) -> None:
        """Pause all posting on a dead token, with a growing pause; resume on any success."""
        if result.failure is Failure.TOKEN:
            if self.paused():
                return  # posts already in flight when the pause began: one pause, not several
            self._paused_until = self._rt.now() + self._pause
            self._pause_reason = result.error
            log.error(
                "Slack rejected the bot token (%s): posting paused for %.0fs; reinstall the app"
                " and set a new SLACK_BOT_TOKEN. Watches are kept and will be told later.",
                result.error,
                self._pause.total_seconds(),
            )
            self._pause = min(self._pause * 2, self._pause_cap)
        elif result.ok and self._paused_until is not None:
            log.info("Slack accepts the bot token again; posting resumed")
            self._paused_until = self._pause_reason = None
            self._pause = self._pause_initial

    def _refused(self) -> SlackResult:
        """What a post during the pause gets, without asking Slack: the token failure again."""
        return SlackResult(error=self._pause_reason, failure=Failure.TOKEN)

    # -- delivery: every post and edit ---------------------------------------------------

    async def post(
        self,
        channel: str,
        message: messages.Message,
        *,
        metadata: dict[str, Any] | None = None,
        thread_ts: str | None = None,
    ) -> SlackResult:
        """chat.postMessage (in a thread when `thread_ts`), unless posting is paused; the
        answer may start or end a pause."""
        if self.paused():
            return self._refused()
        result = await slack_out.post(
            self._rt.slack, channel, message, metadata=metadata, thread_ts=thread_ts
        )
        self._note(result)
        return result

    async def update(self, channel: str, ts: str, message: messages.Message) -> SlackResult:
        """chat.update of a card, unless posting is paused."""
        if self.paused():
            return self._refused()
        result = await slack_out.update(self._rt.slack, channel, ts, message)
        self._note(result)
        return result

    async def publish_home(self, user_id: str, view: dict[str, Any]) -> SlackResult:
        """views.publish of one person's App Home tab, unless posting is paused."""
        if self.paused():
            return self._refused()
        client = self._rt.slack
        result = await slack_out.view_call(
            "views.publish", client.views_publish, user_id=user_id, view=view
        )
        self._note(result)
        return result

    async def open_modal(self, trigger_id: str, view: dict[str, Any]) -> SlackResult:
        """views.open of a modal for a click's trigger_id (valid 3 s), unless posting is paused."""
        if self.paused():
            return self._refused()
        client = self._rt.slack
        result = await slack_out.view_call(
            "views.open", client.views_open, trigger_id=trigger_id, view=view
        )
        self._note(result)
        return result

    # -- a watch's messages --------------------------------------------------------------

    async def _end_if_channel_lost(self, sub: Subscription, result: SlackResult) -> None:
        """A channel we can no longer use ends that watch (with the reason), never retried."""
        if result.failure is Failure.CHANNEL:
            await self._rt.store.end_subscription(
                sub.id, now=self._rt.now(), reason=EndReason.slack(result.error)
            )

    async def update_cards(self, export: Export, *, next_check_at: datetime | None) -> None:
        """Edit every watching channel's status card to show `export` as it is now."""
        store = self._rt.store
        subs = await store.active_subscriptions(export.gid)
        origins = await card_origins(store, (sub.schedule_run_id for sub in subs))
        for sub in subs:
            await self.update_card(
                sub,
                export,
                next_check_at=next_check_at,
                watchers=len(subs),
                origin=origins.get(sub.schedule_run_id or 0),
            )

    async def update_card(
        self,
        sub: Subscription,
        export: Export,
        *,
        next_check_at: datetime | None,
        watchers: int | None = None,
        origin: CardOrigin | None = None,
    ) -> None:
        """Edit one watch's status card to show `export` as it is now (if it has a card)."""
        if not sub.card_ts or self.paused():
            return
        card = messages.render_status_card(
            export,
            now=self._rt.now(),
            watchers=watchers,
            next_check_at=next_check_at,
            origin=origin,
        )
        result = await self.update(sub.channel_id, sub.card_ts, card)
        await self._end_if_channel_lost(sub, result)

    async def announce_pause(self, gid: str, kind: ProblemKind) -> None:
        """Tell every watching channel once that the Asana token lost access to `gid`."""
        message = messages.render_watch_paused(gid, kind, command=self._rt.settings.SLACK_COMMAND)
        for sub in await self._rt.store.active_subscriptions(gid):
            if self.paused():
                return
            await self._end_if_channel_lost(sub, await self.post(sub.channel_id, message))

    async def post_in_thread(
        self, sub: Subscription, message: messages.Message, *, metadata: dict[str, Any]
    ) -> SlackResult:
        """A reply under a watch's card (a stall note); a lost channel ends the watch."""
        result = await self.post(sub.channel_id, message, metadata=metadata, thread_ts=sub.card_ts)
        await self._end_if_channel_lost(sub, result)
        return result

    async def mark_unwatched(self, sub: Subscription) -> None:
        """Edit an ended watch's card, so everyone in the channel sees the watch stopped."""
        row = await self._rt.store.get_export_row(sub.export_gid)
        if sub.card_ts and row is not None:
            origins = await card_origins(self._rt.store, [sub.schedule_run_id])
            card = messages.render_card_unwatched(
                row.to_export(), now=self._rt.now(), origin=origins.get(sub.schedule_run_id or 0)
            )
            await self.update(sub.channel_id, sub.card_ts, card)

    # -- exactly-once notification ---------------------------------------------------------

    async def notify_all(self, export: Export, outcome: Outcome) -> None:
        """Tell every active subscription of `export` once; each ends when told.

        The first is told alone: should Slack reject the token, the pause starts before any
        other post is tried, as when they went one by one. The rest go in waves of
        FANOUT_CONCURRENCY (see there): one claim for the wave, its posts at once, one record
        of the posted ones. A wave is claimed only when it starts, so every claim (a lease, see
        `_deliver`) is as fresh as one taken alone.
        """
        subs = await self._rt.store.active_subscriptions(export.gid)
        if not subs:
            return
        await self.notify(subs[0], export, outcome)
        rest = subs[1:]
        for start in range(0, len(rest), FANOUT_CONCURRENCY):
            await self._notify_wave(rest[start : start + FANOUT_CONCURRENCY], export, outcome)

    async def _notify_wave(
        self, subs: list[Subscription], export: Export, outcome: Outcome
    ) -> None:
        store, now = self._rt.store, self._rt.now
        if self.paused():
            self._rt.metrics.notifications.labels("paused").inc(len(subs))
            return  # recovery tells them once the pause is over
        claimed_at = now()
        won = await fanout_records.claim(store, [sub.id for sub in subs], now=claimed_at)
        claimed = [sub for sub in subs if sub.id in won]
        rendered = await asyncio.gather(
            *(self._notification(sub, export, outcome) for sub in claimed), return_exceptions=True
        )
        failures = [m for m in rendered if isinstance(m, BaseException)]
        mine = [
            s for s, m in zip(claimed, rendered, strict=True) if isinstance(m, messages.Message)
        ]
        told = [m for m in rendered if isinstance(m, messages.Message)]
        for sub, message in zip(claimed, rendered, strict=True):
            if isinstance(message, BaseException):  # not posted: the recovery job tries again
                await store.clear_notified(sub.id, claimed_at=claimed_at)
        await self._record_links(mine, told, outcome)
        results = await asyncio.gather(
            *(
                self._deliver(sub, export, outcome, claimed_at, message)
                for sub, message in zip(mine, told, strict=True)
            ),
            return_exceptions=True,
        )
        posted = [(sub, ts) for sub, ts in zip(mine, results, strict=True) if isinstance(ts, str)]
        await fanout_records.record(
            store,
            [(sub.id, ts) for sub, ts in posted],
            now=now(),
            reason=END_REASONS[outcome],
        )
        for sub, _ in posted:
            log.info("notified subscription %s of export %s: %s", sub.id, export.gid, outcome)
        for result in [*failures, *results]:
            if isinstance(result, BaseException):
                raise result

    async def notify(self, sub: Subscription, export: Export, outcome: Outcome) -> bool:
        """Post this subscription's one notification if this replica wins the right to."""
        store, now = self._rt.store, self._rt.now
        if self.paused():
            self._rt.metrics.notifications.labels("paused").inc()
            return False  # recovery tells it once the pause is over
        claimed_at = now()
        if not await store.try_mark_notified(sub.id, now=claimed_at):
            return False
        message = await self._notification(sub, export, outcome)
        await self._record_links([sub], [message], outcome)
        ts = await self._deliver(sub, export, outcome, claimed_at, message)
        if ts is None:
            return False
        await store.record_notified(sub.id, ts, now=now(), reason=END_REASONS[outcome])
        log.info("notified subscription %s of export %s: %s", sub.id, export.gid, outcome)
        return True

    async def _record_links(
        self, subs: list[Subscription], told: list[messages.Message], outcome: Outcome
    ) -> None:
        """Before finished posts go out: which carry a link, and until when (the link expiry
        job edits only those), in one write."""
        if outcome is Outcome.FINISHED:
            until = self._rt.now() + LINK_VALIDITY
            await self._followups.record_links(
                [
                    (sub.id, until if messages.carries_link(message) else None)
                    for sub, message in zip(subs, told, strict=True)
                ]
            )

    async def _deliver(
        self,
        sub: Subscription,
        export: Export,
        outcome: Outcome,
        claimed_at: datetime,
        message: messages.Message,
    ) -> str | None:
        """Post a claimed notification: its ts, or None (the claim given back unless the
        channel is lost, which ends the watch). The caller records the ts."""
        store = self._rt.store
        counted = self._rt.metrics.notifications
        metadata = {
            "event_type": EVENT_TYPES[outcome],
            "event_payload": {"gid": export.gid, "subscription_id": sub.id},
        }
        # The claim works as a lease: recovery takes over a claim older than the grace, so
        # this post must be over well before then (slack_sdk may be sleeping out a 429), or
        # both would post. Cut short, its outcome is unknown: recovery reads the history.
        deadline = self._rt.settings.NOTIFY_GRACE_SECONDS / 2
        try:
            result = await asyncio.wait_for(
                self.post(sub.channel_id, message, metadata=metadata), deadline
            )
        except TimeoutError:
            counted.labels("timeout").inc()
            log.warning(
                "posting to %s took over %.1fs; recovery will check the channel history",
                sub.channel_id,
                deadline,
            )
            return None
        counted.labels("posted" if result.ok else (result.failure or Failure.TRANSIENT).value).inc()
        await self._end_if_channel_lost(sub, result)
        if result.ts is not None:
            return result.ts
        if result.failure is not Failure.CHANNEL:
            # Not posted: give the claim back so the recovery job tries again.
            await store.clear_notified(sub.id, claimed_at=claimed_at)
        return None

    async def find_notification(
        self, sub: Subscription, outcome: Outcome, *, oldest: float
    ) -> str | None:
        """The ts of this subscription's notification if Slack has it (by its once-key).

        Raises slack_out.HistoryUnavailable when the history could not be read.
        """
        return await slack_out.find_posted(
            self._rt.slack,
            sub.channel_id,
            event_type=EVENT_TYPES[outcome],
            subscription_id=sub.id,
            oldest=oldest,
        )

    async def _notification(
        self, sub: Subscription, export: Export, outcome: Outcome
    ) -> messages.Message:
        now = self._rt.now()
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
