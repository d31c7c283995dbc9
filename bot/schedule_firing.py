"""Fire schedules: each due occurrence creates one export, watched in the schedule's channel.

Exactly one replica fires an occurrence: the one whose INSERT of the (schedule, occurrence) row
wins (`Store.claim_run`). Before Asana is called the run is marked "attempting" (a compare-and-
set, so a slow replica and a sweeping one never both call), and an attempt is never repeated
blind: a run left "attempting" by a replica that died is declared unknown, and the channel is
told (at most once; docs/exactly-once.md says why). Only answers after which Asana certainly
created nothing (a transient refusal, or no request sent) are retried, with backoff, inside
SCHEDULE_RETRY_WINDOW_SECONDS. Every decision is in bot/schedule_decisions.py (pure).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy.exc import OperationalError

from bot import messages, slack_out, watching
from bot.creating import (
    AlreadyHandled,
    CreateRequest,
    Refused,
    Running,
    SlowDown,
    Started,
    Unknown,
    start_export,
)
from bot.db import DatabaseUnavailable, describe_operational_error
from bot.messages import Message
from bot.models import EndReason, Export, ExportState, Subscription
from bot.runtime import Runtime
from bot.schedule_cards import (
    RunOrigin,
    creation_of,
    run_origin,
    run_subscription,
    take_over,
)
from bot.schedule_decisions import GiveUp, after_transient, due_occurrence, is_late
from bot.scheduling import spec_of
from bot.slack_out import Failure
from bot.store import ExportRow, RunOutcome, RunRow, ScheduleRow

log = logging.getLogger(__name__)


def run_key(schedule_id: int, occurrence_at: datetime, attempt: int) -> str:
    """The creation request key of one attempt of one occurrence: a retry is a new request
    (Asana created nothing the time before), a repeat of the same attempt is not."""
    raw = f"schedule\x1f{schedule_id}\x1f{occurrence_at.isoformat()}\x1f{attempt}"
    return hashlib.sha256(raw.encode()).hexdigest()


class ScheduleFirer:
    """The schedule job of one replica: `tick()` fires what is due and resumes retries."""

    def __init__(self, runtime: Runtime, *, rng: random.Random | None = None) -> None:
        self._rt = runtime
        self._rng = rng or random.Random()
        self._busy = asyncio.Lock()

    @property
    def _stale(self) -> timedelta:
        """An attempt older than this was left by a replica that died: its call to Asana (with
        the client's own 429 retries) is long over, and a lease's time more for what follows
        the answer (the watch and its card) has passed too. Shorter, and a live but slow
        replica would be declared dead while it still could hear Asana's answer."""
        s = self._rt.settings
        return timedelta(
            seconds=s.LEASE_SECONDS + s.ASANA_TIMEOUT_SECONDS + s.ASANA_MAX_RETRY_SECONDS
        )

    async def tick(self) -> int:
        """One pass; how many attempts it made. Overlapping ticks return at once."""
        if self._busy.locked():
            return 0
        async with self._busy:
            try:
                return await self._tick()
            except DatabaseUnavailable as exc:
                log.error("schedule job skipped: %s", exc)
            except OperationalError as exc:
                # The database is restarting or locked: the next run retries; one line, no trace.
                log.warning(
                    "schedule job skipped, database unavailable: %s",
                    describe_operational_error(exc),
                )
            except Exception:
                log.exception("schedule job failed; it will run again")
            return 0

    async def _tick(self) -> int:
        store, now = self._rt.store, self._rt.now()
        made = 0
        for row, latest in await store.active_schedules():
            try:
                since = max(latest, row.created_at) if latest else row.created_at
                due = due_occurrence(spec_of(row).trigger(), since=since, now=now)
                if due is None:
                    continue
                run = await store.claim_run(row.id, due.occurrence_at, now=now)
                if run is None:
                    continue  # another replica's insert won: it fires
                log.info(
                    "schedule %s: firing the occurrence of %s%s",
                    row.id,
                    due.occurrence_at.isoformat(),
                    f" (late, {due.coalesced} coalesced)" if due.late else "",
                )
                made += await self._attempt(row, run, late=due.late, coalesced=due.coalesced)
            except Exception:
                log.exception("schedule %s: firing failed; the next tick tries again", row.id)
        for run in await store.runs_to_resume(now, now - self._stale):
            try:
                made += await self._resume(run)
            except Exception:
                log.exception("schedule run %s: resuming failed", run.id)
        return made

    async def _resume(self, run: RunRow) -> int:
        store = self._rt.store
        row = await store.schedule(run.schedule_id)
        if row is None:
            return 0
        if row.ended_at is not None and run.outcome is not RunOutcome.ATTEMPTING:
            await store.record_run(run.id, outcome=RunOutcome.SKIPPED, now=self._rt.now())
            return 0
        # An attempt may have reached Asana even if the schedule ended since: settle it as any.
        if run.outcome is RunOutcome.ATTEMPTING:
            taken = await take_over(store, run, now=self._rt.now())
            if taken is None:
                return 0  # another replica took it over
            creation = await creation_of(store, run_key(row.id, run.occurrence_at, run.attempts))
            if creation is not None and creation.export_gid is not None:
                # Asana answered and the gid was recorded; the replica died before the watch.
                await self._adopt(row, taken, creation.export_gid)
                return 0
            if await store.settle_run(taken, RunOutcome.UNKNOWN, now=self._rt.now()):
                log.warning(
                    "schedule %s: the attempt of %s was left by a replica that stopped;"
                    " its outcome is unknown and it is not repeated",
                    row.id,
                    run.occurrence_at.isoformat(),
                )
                await self._post(
                    row, messages.render_schedule_unknown(row.id, occurrence_at=run.occurrence_at)
                )
            return 0
        # A retry is expected to come after its time; a claim whose replica died is late.
        late = run.outcome is RunOutcome.CLAIMED and is_late(run.occurrence_at, self._rt.now())
        return await self._attempt(row, run, late=late, coalesced=1)

    async def _attempt(self, row: ScheduleRow, run: RunRow, *, late: bool, coalesced: int) -> int:
        """Mark the attempt, then ask Asana once through `start_export`, then act on the answer."""
        store = self._rt.store
        attempt = await store.start_run_attempt(
            run, now=self._rt.now(), late=late, coalesced=coalesced
        )
        if attempt is None:
            return 0  # another replica took this attempt
        outcome = await start_export(
            self._rt,
            CreateRequest(
                organization_gid=row.organization_gid,
                team_id=row.team_id,
                channel_id=row.channel_id,
                user_id=row.created_by,
                request_key=run_key(row.id, run.occurrence_at, attempt.attempts),
                force=True,  # an occurrence is one export, whatever else is running
                by_person=False,
            ),
        )
        now = self._rt.now()
        match outcome:
            case Started(export):
                resumed = row.paused_reason is not None and await store.set_schedule_paused(
                    row.id, None
                )
                if not resumed or await self._post(
                    row, messages.render_schedule_resumed(row.id, export.gid)
                ):
                    await watching.answer_for_export(
                        self._rt,
                        export,
                        team_id=row.team_id,
                        channel_id=row.channel_id,
                        user_id=row.created_by,
                        audited=False,  # a run is nobody's action: its card names the schedule
                        origin=run_origin(row, attempt),
                    )
                    await self._end_if_card_failed(row, attempt)
                # Recorded after the watch: a replica that dies before this leaves the run
                # "attempting", and the one that takes it over finds the gid and the card.
                await store.record_run(
                    run.id, outcome=RunOutcome.CREATED, now=self._rt.now(), export_gid=export.gid
                )
            case Refused(kind, _message, retry_after) if kind.is_transient:
                decision = after_transient(
                    attempts=attempt.attempts,
                    occurrence_at=run.occurrence_at,
                    now=now,
                    window=timedelta(seconds=self._rt.settings.SCHEDULE_RETRY_WINDOW_SECONDS),
                    retry_after=retry_after,
                    rng=self._rng,
                )
                if isinstance(decision, GiveUp):
                    await store.record_run(run.id, outcome=RunOutcome.FAILED, now=now)
                    await self._post(
                        row,
                        messages.render_schedule_failed(
                            row.id,
                            kind,
                            occurrence_at=run.occurrence_at,
                            organization_gid=row.organization_gid,
                            gave_up_after=(now - run.occurrence_at).total_seconds(),
                        ),
                    )
                else:
                    await store.record_run(
                        run.id, outcome=RunOutcome.RETRYING, now=now, next_attempt_at=decision.at
                    )
            case Refused(kind) if kind.needs_person:
                await store.record_run(run.id, outcome=RunOutcome.PAUSED, now=now)
                if await store.set_schedule_paused(row.id, f"Asana refused: {kind.value}"):
                    await self._post(
                        row,
                        messages.render_schedule_paused(
                            row.id,
                            kind,
                            organization_gid=row.organization_gid,
                            command=self._rt.settings.SLACK_COMMAND,
                        ),
                    )
            case Refused(kind):
                await store.record_run(run.id, outcome=RunOutcome.FAILED, now=now)
                await self._post(
                    row,
                    messages.render_schedule_failed(
                        row.id,
                        kind,
                        occurrence_at=run.occurrence_at,
                        organization_gid=row.organization_gid,
                    ),
                )
            case Unknown() | AlreadyHandled() | Running() | SlowDown():
                # Running and SlowDown cannot happen (forced, not a person); AlreadyHandled would
                # mean this attempt's key was used before: either way, never ask again blind.
                await store.record_run(run.id, outcome=RunOutcome.UNKNOWN, now=now)
                await self._post(
                    row, messages.render_schedule_unknown(row.id, occurrence_at=run.occurrence_at)
                )
        return 1

    async def _adopt(self, row: ScheduleRow, run: RunRow, export_gid: str) -> None:
        """Finish what a dead replica began after Asana's answer was recorded: the export is
        watched in the channel with one card (the history says whether the dead replica had
        already posted it), then the run is recorded as created. Nothing is asked of Asana."""
        rt, store = self._rt, self._rt.store
        sub = await run_subscription(store, run.id)
        origin = run_origin(row, run)
        if sub is None:
            kept = await store.get_export_row(export_gid)
            export = (
                kept.to_export()
                if kept is not None
                else Export(export_gid, ExportState.PENDING, organization_gid=row.organization_gid)
            )
            await watching.answer_for_export(
                rt,
                export,
                team_id=row.team_id,
                channel_id=row.channel_id,
                user_id=row.created_by,
                origin=origin,
            )
            await self._end_if_card_failed(row, run)
        elif sub.card_ts is None:
            try:
                ts = await slack_out.find_posted(
                    rt.slack,
                    sub.channel_id,
                    event_type=watching.CARD_EVENT,
                    subscription_id=sub.id,
                    oldest=(sub.created_at - timedelta(minutes=5)).timestamp(),
                )
            except slack_out.HistoryUnavailable:
                return  # unknown whether the card is there: the next take-over looks again
            kept = await store.get_export_row(export_gid)
            if ts is not None:
                await store.set_card_ts(sub.id, ts)
                if sub.ended_at is not None and kept is not None:
                    await self._show_how_it_ended(replace(sub, card_ts=ts), kept, origin)
            elif kept is not None and sub.ended_at is None:
                next_check = kept.next_poll_at
                await watching.post_card(
                    rt, sub, kept.to_export(), next_check_at=next_check, origin=origin
                )
        await store.record_run(
            run.id, outcome=RunOutcome.CREATED, now=rt.now(), export_gid=export_gid
        )
        log.warning(
            "schedule %s: the run of %s was left by a replica that stopped after Asana started"
            " export %s; it is watched now",
            row.id,
            run.occurrence_at.isoformat(),
            export_gid,
        )

    async def _show_how_it_ended(
        self, sub: Subscription, kept: ExportRow, origin: RunOrigin
    ) -> None:
        """The watch ended (told, or unwatched) while its card's ts was unknown, so nobody could
        edit the card then: bring it up to date now."""
        notify = self._rt.notify
        if sub.end_reason == EndReason.UNWATCHED:
            await notify.mark_unwatched(sub)
        elif kept.state.has_ended:
            await notify.update_card(sub, kept.to_export(), next_check_at=None, origin=origin.card)

    async def _end_if_card_failed(self, row: ScheduleRow, run: RunRow) -> None:
        """A channel that refused the run's card is unusable: the schedule ends (as its posts)."""
        sub = await run_subscription(self._rt.store, run.id)
        reason = sub.end_reason if sub is not None else None
        if not reason or slack_out.classify(reason.removeprefix("slack_")) is not Failure.CHANNEL:
            return
        if await self._rt.store.end_schedule(row.id, now=self._rt.now(), reason=reason):
            log.warning("schedule %s ended: its channel is unusable (%s)", row.id, reason)

    async def _post(self, row: ScheduleRow, message: Message) -> bool:
        """Post in the schedule's channel; False when the channel is unusable, which ends the
        schedule (a paused token or a Slack hiccup loses this post only)."""
        result = await self._rt.notify.post(row.channel_id, message)
        if result.failure is Failure.CHANNEL:
            reason = EndReason.slack(result.error)
            if await self._rt.store.end_schedule(row.id, now=self._rt.now(), reason=reason):
                log.warning("schedule %s ended: its channel is unusable (%s)", row.id, reason)
            return False
        return True
