"""Chaos for schedules (issue 11, "Done when"): a schedule firing every minute on three replicas,
SIGKILLed at random and aimed between Asana's answer and the commit.

Three `asana-export-bot run` processes share one fresh PostgreSQL database, one fake Asana and one
fake Slack. A `schedule cron "* * * * *"` made through a signed slash command fires OCCURRENCES
times. Its exports finish at random moments a few seconds after they are created; replicas are
SIGKILLed at random moments (some just after an export finishes, so mid-poll or mid-notify; some
at the moment an occurrence fires) and restarted. At AIMED occurrences the fake Asana creates the
export and holds its answer (`FakeAsana.hold_creates`), and the replica that sent the request
(found through Linux /proc) is killed: Asana started an export the bot never heard of. At the
last occurrence the replica that sent the request is killed a moment after Asana answered (not
held): before it read the answer, recorded the gid, watched the export or posted the card, or after.

The bot chose at most once (docs/exactly-once.md), so at the end:
- every occurrence was claimed once, and Asana got at most one creation request for it;
- an aimed occurrence has exactly one export at Asana, never a second, and the channel is told
  once that its outcome is unknown; an occurrence whose kill landed before the request reached
  Asana has none (counted and printed: the random kills are placed so that most create);
- every export the bot recorded has exactly one status card, naming the schedule, and exactly
  one finished post in the schedule's channel.

A cron schedule cannot be sped up by the wall clock: the test waits for real minute boundaries
(about 3.5 to 4.5 minutes, mostly asleep) and runs on the PostgreSQL xdist worker beside the
others. Needs PostgreSQL (`ASANA_BOT_TEST_POSTGRES_URL`) and Linux /proc; skipped otherwise.
`ASANA_BOT_CHAOS_SEED=<int>` replays the random choices.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.demo.signing import post_slash_command
from bot.testing.process import SIGNING_SECRET
from tests.test_chaos import Fleet, chaos_env, require, sender, wait_until

pytestmark = pytest.mark.skipif(
    not Path("/proc/net/tcp").exists(),
    reason="needs Linux /proc to tell which replica sent a held request",
)

ORG = "4200000000000042"
ADMIN = "U0ADMIN"
CHANNEL = "C0SCHED"
OCCURRENCES = 4
#: Occurrences (by index) whose creation is held and whose sender is killed.
AIMED = (1, 2)
FINISHED_EVENT = "asana_export_finished"
UNKNOWN_WORDS = "I do not know whether an export was started"


@dataclass
class Run:
    """What the test did and saw; printed at the end whatever happened."""

    rng: random.Random
    fleet: Fleet
    asana: FakeAsana
    kills: int = 0
    aimed_kills: int = 0
    after_answer_kills: int = 0
    #: Occurrence (UTC minute) -> the gid Asana created while its answer was held.
    held: dict[datetime, str] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)
    #: Set when the chaos is over: kills still scheduled (timers) do nothing.
    calm: threading.Event = field(default_factory=threading.Event)

    def kill_random(self) -> None:
        if self.calm.is_set():
            return
        live = self.fleet.live()
        if live:
            slot, _ = self.rng.choice(live)
            if self.fleet.kill(slot, restart_after=self.rng.uniform(0.1, 1.5)):
                self.kills += 1

    def finisher(self) -> None:
        """Finish each export a few seconds after Asana created it; sometimes kill a replica
        right after, while it polls or posts the finished message."""
        seen: dict[str, float] = {}
        while not self.stop.is_set():
            now = time.monotonic()
            for gid in self.asana.export_gids():
                seen.setdefault(gid, now + self.rng.uniform(2.0, 8.0))
            for gid, at in seen.items():
                if gid not in self.finished and now >= at:
                    self.asana.set_state(gid, "finished")
                    self.finished.add(gid)
                    if self.rng.random() < 0.6:
                        delay = self.rng.uniform(0.0, 1.5)
                        threading.Timer(delay, self.kill_random).start()
            time.sleep(0.1)

    def aimed_kill(self, occurrence: datetime) -> None:
        """Wait for the held creation of this occurrence, SIGKILL the replica that sent it,
        then let the fake answer (nobody hears it)."""
        held = wait_until(self.asana.held_creates, 50, interval=0.02)
        require(held, f"no creation was held for {occurrence:%H:%M}")
        assert held is not None
        (creation,) = held
        require(creation.client_port is not None, "the held request has no client port")
        assert creation.client_port is not None
        processes = [p for _, p in self.fleet.live()]
        origin = sender(processes, creation.client_port, self.asana.port)
        slot = self.fleet.slot_of(origin)
        require(slot is not None, "the replica that sent the held request is not running")
        assert slot is not None
        if self.fleet.kill(slot, restart_after=self.rng.uniform(0.2, 1.5)):
            self.kills += 1
            self.aimed_kills += 1
        self.held[occurrence] = creation.gid
        self.asana.release_creates()

    def kill_after_answer(self, occurrence: datetime) -> None:
        """Once Asana has accepted this occurrence's request (answered, not held), SIGKILL the
        replica that sent it a moment later: before it read the answer, recorded the gid,
        watched the export or posted its card, or just after."""
        at = occurrence.timestamp()

        def accepted() -> Any:
            return next(
                (r for r in self.asana.requests if r.method == "POST" and r.wall >= at), None
            )

        request = wait_until(accepted, 20, interval=0.005)
        if request is None or request.client_port is None:
            return
        time.sleep(self.rng.uniform(0.0, 0.6))
        if self.calm.is_set():
            return
        processes = [p for _, p in self.fleet.live()]
        slot = self.fleet.slot_of(sender(processes, request.client_port, self.asana.port))
        if slot is not None and self.fleet.kill(slot, restart_after=self.rng.uniform(0.2, 1.5)):
            self.kills += 1
            self.after_answer_kills += 1


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def post_time(request: Any) -> datetime:
    """The occurrence a creation request belongs to: the minute it arrived in (the job fires
    within seconds of its occurrence; a dead replica's claim is resumed within the minute)."""
    return datetime.fromtimestamp(request.wall, UTC).replace(second=0, microsecond=0)


def card_of(message: dict[str, Any]) -> bool:
    return message["metadata"] is None or message["metadata"]["event_type"] == "asana_export_card"


@pytest.fixture
def seed() -> int:
    chosen = os.environ.get("ASANA_BOT_CHAOS_SEED")
    return int(chosen) if chosen else random.SystemRandom().randrange(2**32)


@pytest.fixture
def fleet(bot_env: dict[str, str], fresh_postgres_url: str, tmp_path: Path) -> Iterator[Fleet]:
    env = {
        **chaos_env(bot_env, fresh_postgres_url),
        "ASANA_ORGANIZATION_GID": ORG,
        "ADMIN_USERS": ADMIN,
        "LINK_POLICY": "anywhere",
    }
    fleet = Fleet(tmp_path, env, start_timeout=120.0)
    try:
        yield fleet
    finally:
        fleet.kill_all()


@pytest.mark.timeout(600)
def test_a_schedule_every_minute_on_killed_replicas_creates_once_per_occurrence(
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    fleet: Fleet,
    fresh_postgres_url: str,
    seed: int,
) -> None:
    print(f"\nschedule chaos seed {seed}")
    rng = random.Random(seed)
    began = time.monotonic()
    fake_asana.set_organization(ORG, "Acme")
    fleet.start_all()
    run = Run(rng, fleet, fake_asana)

    (_, bot), *_ = fleet.live()
    answer = post_slash_command(
        bot.events_url,
        secret=SIGNING_SECRET,
        text='schedule cron "* * * * *"',
        channel_id=CHANNEL,
        user_id=ADMIN,
        response_url=fake_slack.new_response_url(),
    )
    require(answer.status == 200 and "Schedule #1" in answer.body_text, answer.body_text)
    # pool_pre_ping: the shared server may be restarted by another test meanwhile.
    engine = sa.create_engine(fresh_postgres_url, pool_pre_ping=True)
    with engine.connect() as conn:
        created = conn.execute(sa.text("SELECT created_at FROM schedules")).scalar_one()
    first = (created.astimezone(UTC) + timedelta(minutes=1)).replace(second=0, microsecond=0)
    occurrences = [first + timedelta(minutes=k) for k in range(OCCURRENCES)]

    finisher = threading.Thread(target=run.finisher, daemon=True)
    finisher.start()
    try:
        for k, occurrence in enumerate(occurrences):
            at = occurrence.timestamp()
            sleep_until(at - 2.0)  # the previous occurrence's request is long answered
            if k in AIMED:
                fake_asana.hold_creates(1)
            elif k == 0:
                # A kill at the firing moment: it may land before Asana gets the request.
                threading.Timer(
                    max(0.0, at - time.time() + rng.uniform(0.0, 3.0)), run.kill_random
                ).start()
            else:
                threading.Thread(target=run.kill_after_answer, args=(occurrence,)).start()
            # Kills at random moments of the minute, clear of the firing moment.
            for _ in range(2):
                moment = at + rng.uniform(8.0, 52.0)
                threading.Timer(max(0.0, moment - time.time()), run.kill_random).start()
            sleep_until(at)
            if k in AIMED:
                run.aimed_kill(occurrence)
        sleep_until(occurrences[-1].timestamp() + 10)  # it has fired; the next must not
        live = wait_until(fleet.live, 30)
        require(live, "no replica to remove the schedule with")
        assert live is not None
        (_, bot), *_ = live
        response_url = fake_slack.new_response_url()
        removed = post_slash_command(
            bot.events_url,
            secret=SIGNING_SECRET,
            text="unschedule 1",
            channel_id=CHANNEL,
            user_id=ADMIN,
            response_url=response_url,
        )
        if "removed" not in removed.body_text:  # acked in time, answered by response_url
            later = wait_until(lambda: fake_slack.responses(response_url), 30)
            require(later and "removed" in str(later[0].body), f"not removed: {later}")
        sleep_until(occurrences[-1].timestamp() + 15)
        run.calm.set()
        fleet.wait_restarts(timeout=60)

        # Drain: every export the bot recorded finished and told; then a quiet spell.
        try:

            def settled() -> bool:
                try:
                    return counts_settled()
                except sa.exc.OperationalError:
                    return False

            def counts_settled() -> bool:
                with engine.connect() as conn:
                    open_runs = conn.execute(
                        sa.text(
                            "SELECT count(*) FROM schedule_runs"
                            " WHERE outcome IN ('claimed', 'attempting', 'retrying')"
                        )
                    ).scalar_one()
                    untold = conn.execute(
                        sa.text("SELECT count(*) FROM subscriptions WHERE ended_at IS NULL")
                    ).scalar_one()
                return open_runs == 0 and untold == 0

            wait_until(settled, 60, interval=0.25)
            time.sleep(3.0)  # > NOTIFY_GRACE_SECONDS + RECOVER_SECONDS: late doubles show
            with engine.connect() as conn:
                runs = list(
                    conn.execute(
                        sa.text(
                            "SELECT occurrence_at, outcome, export_gid, attempts FROM schedule_runs"
                            " ORDER BY occurrence_at"
                        )
                    )
                )
                recorded = {
                    str(g)
                    for (g,) in conn.execute(
                        sa.text(
                            "SELECT export_gid FROM created_exports WHERE export_gid IS NOT NULL"
                        )
                    )
                }
        finally:
            engine.dispose()
    finally:
        run.calm.set()
        run.stop.set()
    finisher.join(5)
    exit_codes = fleet.stop_all()
    elapsed = time.monotonic() - began
    tracebacks = fleet.logs().count("Traceback")

    creates = [r for r in fake_asana.requests if r.method == "POST"]
    per_occurrence = Counter(post_time(r) for r in creates)
    created_gids = set(fake_asana.export_gids())
    messages = [m for m in fake_slack.messages(CHANNEL) if not m["deleted"]]
    cards = Counter(
        gid for m in messages if card_of(m) for gid in created_gids if f"`{gid}`" in m["text"]
    )
    finished = Counter(
        str(m["metadata"]["event_payload"]["gid"])
        for m in messages
        if (m["metadata"] or {}).get("event_type") == FINISHED_EVENT
    )
    unknown = Counter(
        next((o for o in occurrences if f"{o:%Y-%m-%d %H:%M} UTC" in m["text"]), None)
        for m in messages
        if UNKNOWN_WORDS in m["text"]
    )
    by_occurrence = {r.occurrence_at: r for r in runs}

    def minutes(counts: Counter[Any]) -> dict[str, int]:
        return {f"{k:%H:%M}" if k else "?": n for k, n in sorted(counts.items(), key=str)}

    before_asana = [o for o in occurrences if per_occurrence[o] == 0]
    print(
        f"schedule chaos seed {seed}: occurrences {len(runs)} of {OCCURRENCES}"
        f" ({Counter(r.outcome for r in runs)}), creation requests {len(creates)}"
        f" {minutes(per_occurrence)}, kills {run.kills} (aimed while held {run.aimed_kills},"
        f" at the sender just after the answer {run.after_answer_kills}), occurrences"
        f" whose kill landed before Asana {len(before_asana)}, exports recorded {len(recorded)},"
        f" cards {dict(cards)}, finished posts {dict(finished)}, unknown posts {minutes(unknown)},"
        f" elapsed {elapsed:.1f}s, tracebacks in logs {tracebacks}"
    )
    context = f"seed {seed}; replay with ASANA_BOT_CHAOS_SEED={seed}"

    # Every occurrence claimed once; Asana asked at most once per occurrence, never outside one.
    assert fleet.errors == [], context
    assert [r.occurrence_at for r in runs] == occurrences, context
    assert set(per_occurrence) <= set(occurrences), (context, per_occurrence)
    assert all(n <= 1 for n in per_occurrence.values()), (context, per_occurrence)
    assert all(r.status == 201 for r in creates), context
    assert len(before_asana) <= 1, (context, "most occurrences reach Asana", before_asana)

    # The aimed kills: one export at Asana, never a second, unknown to the bot, said once.
    assert run.aimed_kills == len(AIMED), context
    for k in AIMED:
        occurrence = occurrences[k]
        gid = run.held[occurrence]
        assert per_occurrence[occurrence] == 1, (context, occurrence)
        assert by_occurrence[occurrence].outcome == "unknown", (context, occurrence)
        assert gid not in recorded and cards[gid] == 0 and finished[gid] == 0, (context, gid)
    assert all(n == 1 for n in unknown.values()), (context, unknown)
    unknown_runs = {r.occurrence_at for r in runs if r.outcome == "unknown"}
    assert set(unknown) == unknown_runs, (context, unknown, unknown_runs)

    # Every export the bot recorded: one card naming the schedule, one finished post.
    created_runs = [r for r in runs if r.outcome == "created"]
    assert {str(r.export_gid) for r in created_runs} == recorded, context
    # Each export at Asana (made in the order of the requests) is its occurrence's: recorded
    # by the bot, or of a run whose outcome the channel was told is unknown.
    assert len(created_gids) == len(creates), context
    for gid, request in zip(fake_asana.export_gids(), creates, strict=True):
        made_for = by_occurrence[post_time(request)]
        if made_for.outcome == "created":
            assert str(made_for.export_gid) == gid, (context, made_for, gid)
        else:
            assert made_for.outcome == "unknown" and gid not in recorded, (context, made_for)
    for gid in recorded:
        assert cards[gid] == 1, (context, gid, cards)
        assert finished[gid] == 1, (context, gid, finished)
        (card,) = [m for m in messages if card_of(m) and f"`{gid}`" in m["text"]]
        assert "From schedule #1" in card["text"] and "is finished" in card["text"], card
    assert set(cards) == recorded and set(finished) == recorded, context
    assert exit_codes == [0] * len(exit_codes), context
    assert tracebacks == 0, context
