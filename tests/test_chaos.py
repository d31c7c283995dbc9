"""Chaos: three replicas of the real bot, SIGKILLed and restarted while watched exports finish.

Three `asana-export-bot run` processes (HTTP mode, one port each) share one fresh PostgreSQL
database, one fake Asana and one fake Slack. Exports are watched from many channels (some from
several) through signed slash commands sent to random replicas, then finish at random moments
while replicas are SIGKILLed and restarted at random. Some kills are aimed at the gap the design
closes with message metadata and `conversations.history`: the fake Slack stores a finished post
but holds its HTTP answer (`FakeSlack.set_delay_after_store`), and the replica that sent it is
killed before it can record the ts. At the end every watch must have exactly one "finished" post
(none missing, none doubled, one per channel and export), be ended, and its status card must show
the export as finished.

Sizes: by default the CI size (40 exports over 32 channels, 30-45 s on 2 cores);
`ASANA_BOT_CHAOS_FULL=1` runs the full size (200 exports over 60 channels, a few minutes).
`ASANA_BOT_CHAOS_SEED=<int>` replays a schedule (timing still varies): the seed is printed (run
pytest with `-s`) and named in every failure. Needs PostgreSQL (`ASANA_BOT_TEST_POSTGRES_URL`)
and Linux `/proc` (to tell which replica sent a held request); skipped with the reason otherwise.

The three smaller tests at the end each aim one kill (or race) at one gap, deterministically:
a told watch left active, a card left stale, and two recoveries of one crashed claim.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa

from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack, HeldCall
from bot.demo.signing import post_slash_command
from bot.testing import wait_until as kit_wait_until
from bot.testing.process import SIGNING_SECRET, BotProcess

T = TypeVar("T")

FULL = os.environ.get("ASANA_BOT_CHAOS_FULL", "").strip().lower() in ("1", "true", "yes")
FINISHED_EVENT = "asana_export_finished"
REPLICAS = 3
POSTGRES_PORT = 5432

pytestmark = pytest.mark.skipif(
    not Path("/proc/net/tcp").exists(),
    reason="needs Linux /proc to tell which replica sent a held request",
)


@dataclass(frozen=True)
class Size:
    """How big one chaos run is; the timings are seconds of wall clock."""

    exports: int
    channels: int
    finish_window: float  # exports finish at random moments in [1, finish_window]
    kill_every: tuple[float, float]  # random SIGKILLs, spaced uniformly in this range
    hold_kills: int  # kill episodes aimed between "Slack stored the post" and "the bot knew"
    drain_timeout: float  # after the window, how long every watch may take to be told
    poll_max: str  # POLL_MAX_SECONDS: bigger runs poll less often to fit two cores


CI_SIZE = Size(40, 32, 18.0, (2.0, 4.0), 4, 40.0, "1")
FULL_SIZE = Size(200, 60, 75.0, (2.0, 4.0), 12, 150.0, "2")
SIZE = FULL_SIZE if FULL else CI_SIZE


def chaos_env(base: dict[str, str], database_url: str, size: Size = CI_SIZE) -> dict[str, str]:
    """Fast intervals (as in test_e2e_watch), short grace and leases so crashes heal fast."""
    return {
        **base,
        "DATABASE_URL": database_url,
        "TICK_SECONDS": "0.2",
        "RECOVER_SECONDS": "0.5",
        "POLL_INITIAL_SECONDS": "0.5",
        "POLL_MAX_SECONDS": size.poll_max,
        "POLL_JITTER": "0.2",
        "PAUSED_RETRY_SECONDS": "1",
        "NOTIFY_GRACE_SECONDS": "2",
        "LEASE_SECONDS": "5",  # the smallest the settings accept
        "POLL_BUDGET_PER_MINUTE": "100000",  # the fake Asana has no rate limit here
        "LOG_LEVEL": "INFO",
    }


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.02) -> T | None:
    """The kit's `wait_until`, but None at the deadline: `require` turns it into an error."""
    try:
        return kit_wait_until(predicate, timeout, interval=interval)
    except AssertionError:
        return None


def require(condition: object, message: str) -> None:
    """A precondition of an aimed test: fails it as an error, never as the bug it looks for."""
    if not condition:
        raise RuntimeError(message)


# -- which process owns a TCP connection (Linux /proc) -----------------------------------


def _socket_inode(local_port: int, remote_port: int) -> int | None:
    """The inode of the socket :local_port -> :remote_port, from /proc/net/tcp*."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines, None)
                for line in lines:
                    parts = line.split()
                    local, remote, inode = parts[1], parts[2], int(parts[9])
                    if (
                        inode
                        and int(local.rsplit(":", 1)[1], 16) == local_port
                        and int(remote.rsplit(":", 1)[1], 16) == remote_port
                    ):
                        return inode
        except OSError:
            continue
    return None


def _owns_socket(pid: int, inode: int) -> bool:
    wanted = f"socket:[{inode}]"
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == wanted:
                return True
        except OSError:
            continue
    return False


def sender(processes: Iterable[BotProcess], local_port: int, remote_port: int) -> BotProcess | None:
    """Which running bot process owns the client socket :local_port -> :remote_port."""
    inode = _socket_inode(local_port, remote_port)
    if inode is None:
        return None
    for process in processes:
        running = process.proc is not None and process.proc.poll() is None
        if running and process.proc is not None and _owns_socket(process.proc.pid, inode):
            return process
    return None


# -- the replicas ---------------------------------------------------------------------------


@dataclass
class Fleet:
    """REPLICAS slots, each running the current process of one replica; kills and restarts."""

    workdir: Path
    env: dict[str, str]
    slots: list[BotProcess | None] = field(default_factory=lambda: [None] * REPLICAS)
    retired: list[BotProcess] = field(default_factory=list)
    generations: list[int] = field(default_factory=lambda: [0] * REPLICAS)
    errors: list[str] = field(default_factory=list)
    #: How long a replica may take to serve (a loaded machine starts Python slowly).
    start_timeout: float = 40.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _restarts: list[threading.Thread] = field(default_factory=list)

    def _spawn(self, slot: int) -> None:
        with self._lock:
            generation = self.generations[slot]
            self.generations[slot] += 1
        process = BotProcess(self.workdir, {**self.env, "PORT": ""}, name=f"r{slot}-{generation}")
        try:
            process.start(timeout=self.start_timeout)
        except RuntimeError as exc:
            self.errors.append(f"replica {slot} did not start: {str(exc)[-2000:]}")
            return
        with self._lock:
            self.slots[slot] = process

    def start_all(self) -> None:
        threads = [threading.Thread(target=self._spawn, args=(s,)) for s in range(REPLICAS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        require(not self.errors, f"replicas did not start: {self.errors}")

    def live(self) -> list[tuple[int, BotProcess]]:
        with self._lock:
            return [
                (slot, p)
                for slot, p in enumerate(self.slots)
                if p is not None and p.proc is not None and p.proc.poll() is None
            ]

    def kill(self, slot: int, *, restart_after: float) -> bool:
        """SIGKILL the slot's process (if it runs) and start a new one after `restart_after`."""
        with self._lock:
            process = self.slots[slot]
            self.slots[slot] = None
        if process is None or process.proc is None or process.proc.poll() is not None:
            return False
        process.kill()
        self.retired.append(process)

        def restart() -> None:
            time.sleep(restart_after)
            self._spawn(slot)

        thread = threading.Thread(target=restart, name=f"restart-{slot}", daemon=True)
        self._restarts.append(thread)
        thread.start()
        return True

    def wait_restarts(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._restarts:
            thread.join(max(0.1, deadline - time.monotonic()))
        for slot in range(REPLICAS):  # a slot whose restart failed is started again here
            if self.slots[slot] is None:
                self._spawn(slot)
        require(len(self.live()) == REPLICAS, f"replicas did not restart: {self.errors}")

    def slot_of(self, process: BotProcess | None) -> int | None:
        return next((slot for slot, p in self.live() if p is process), None)

    def stop_all(self) -> list[int | None]:
        codes = []
        for _, process in self.live():
            codes.append(process.stop())
            self.retired.append(process)
        return codes

    def kill_all(self) -> None:
        with self._lock:
            processes = [p for p in self.slots if p is not None]
        for process in processes:
            process.kill()

    def logs(self) -> str:
        """Every process's log, the killed ones too."""
        every = dict.fromkeys([*self.retired, *(p for p in self.slots if p is not None)])
        return "\n".join(process.logs() for process in every)


# -- watching and checking ---------------------------------------------------------------


@dataclass(frozen=True)
class Watch:
    channel: str
    gid: str


def subscribe(bot: BotProcess, slack: FakeSlack, watch: Watch, user: str = "U0001") -> None:
    """One signed /asana-export to one replica, as Slack sends it; the channel must watch."""
    response_url = slack.new_response_url()
    response = post_slash_command(
        bot.events_url,
        secret=SIGNING_SECRET,
        text=watch.gid,
        channel_id=watch.channel,
        user_id=user,
        response_url=response_url,
    )
    require(response.status == 200, f"slash command answered {response.status}")
    require(response.elapsed < 3.0, "slash command not acked inside Slack's 3 seconds")
    answer = json.loads(response.body_text)
    if "Watching" not in answer.get("text", ""):  # acked "Looking up...": the answer follows
        late = wait_until(lambda: slack.responses(response_url), timeout=30)
        require(late, f"no answer for {watch}: {answer}")
        assert late is not None
        answer = late[0].body
    require("Watching" in answer["text"], f"{watch} not watched: {answer}")


def find_card(slack: FakeSlack, watch: Watch) -> dict[str, Any]:
    """The status card of a watch: the bot's message without metadata naming the gid."""
    cards = [
        m
        for m in slack.messages(watch.channel)
        if m["metadata"] is None and f"`{watch.gid}`" in m["text"]
    ]
    require(len(cards) == 1, f"{watch}: cards {[c['text'] for c in cards]}")
    return cards[0]


def card_is_finished(slack: FakeSlack, watch: Watch, ts: str) -> bool:
    """The card's latest version (the fake applies chat.update in place) says finished."""
    message = slack.message(watch.channel, ts)
    return message is not None and "is finished" in message["text"]


def stored_finished_posts(slack: FakeSlack) -> list[dict[str, Any]]:
    """Every finished post the fake STORED (answered or not), oldest first."""
    return [
        m
        for m in slack.messages()
        if (m["metadata"] or {}).get("event_type") == FINISHED_EVENT and not m["deleted"]
    ]


def is_finished_post(held: HeldCall) -> bool:
    metadata = held.call.body.get("metadata")
    return isinstance(metadata, dict) and metadata.get("event_type") == FINISHED_EVENT


def untold_watches(engine: sa.Engine) -> int:
    """Watches still waiting for their post (neither ended nor recorded as told)."""
    with engine.connect() as conn:
        query = sa.text(
            "SELECT count(*) FROM subscriptions WHERE ended_at IS NULL AND notified_ts IS NULL"
        )
        return int(conn.execute(query).scalar_one())


def subscription_rows(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT id, channel_id, export_gid, card_ts, notified_ts, ended_at,"
                    " end_reason FROM subscriptions ORDER BY id"
                )
            )
        )


@dataclass
class Chaos:
    """The random schedule of one run and what it did."""

    rng: random.Random
    fleet: Fleet
    asana: FakeAsana
    slack: FakeSlack
    unfinished: list[str]
    kills: int = 0
    hold_kills: int = 0
    #: Subscriptions whose post Slack stored while its sender was killed before the answer.
    orphaned: set[int] = field(default_factory=set)

    def finish(self, gid: str) -> None:
        if gid in self.unfinished:
            self.unfinished.remove(gid)
            self.asana.set_state(gid, "finished")

    def random_kill(self) -> None:
        live = self.fleet.live()
        if live:
            slot, _ = self.rng.choice(live)
            if self.fleet.kill(slot, restart_after=self.rng.uniform(0.1, 1.5)):
                self.kills += 1

    def kill_between_post_and_commit(self, wait: float = 6.0) -> None:
        """Slack stores finished posts but holds the answers; SIGKILL each replica holding one.

        One export is finished now so that some replica has a post to make. Each killed replica
        sent a post Slack stored and never learned its ts: only history can tell it was made.
        """
        self.slack.set_delay_after_store("chat.postMessage", math.inf)
        already = len(self.slack.held_calls())
        try:
            if self.unfinished:
                self.finish(self.rng.choice(self.unfinished))
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                processes = [p for _, p in self.fleet.live()]
                by_slot: dict[int, list[HeldCall]] = {}
                for held in self.slack.held_calls("chat.postMessage")[already:]:
                    if held.holding and is_finished_post(held) and held.peer is not None:
                        origin = sender(processes, held.peer[1], self.slack.port)
                        slot = self.fleet.slot_of(origin)
                        if slot is not None:
                            by_slot.setdefault(slot, []).append(held)
                if by_slot:
                    for slot, held_posts in sorted(by_slot.items()):
                        if self.fleet.kill(slot, restart_after=self.rng.uniform(0.2, 1.5)):
                            self.kills += 1
                            self.hold_kills += 1
                            self.orphaned.update(
                                h.call.body["metadata"]["event_payload"]["subscription_id"]
                                for h in held_posts
                            )
                    return
                time.sleep(0.02)
        finally:
            self.slack.set_delay_after_store("chat.postMessage", 0)
            self.slack.release_held()  # live replicas get their answers; dead ones nothing


@pytest.fixture
def seed() -> int:
    chosen = os.environ.get("ASANA_BOT_CHAOS_SEED")
    return int(chosen) if chosen else random.SystemRandom().randrange(2**32)


@pytest.fixture
def fleet(bot_env: dict[str, str], fresh_postgres_url: str, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path, chaos_env(bot_env, fresh_postgres_url, SIZE))
    try:
        yield fleet
    finally:
        fleet.kill_all()


@pytest.mark.timeout(900 if FULL else 180)
def test_replicas_killed_at_random_tell_every_watch_exactly_once(
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    fleet: Fleet,
    fresh_postgres_url: str,
    seed: int,
) -> None:
    print(f"\nchaos seed {seed} ({'full' if FULL else 'CI'} size: {SIZE})")
    rng = random.Random(seed)
    began = time.monotonic()
    fleet.start_all()

    # Exports, watched from 1 to 3 distinct channels each, through random replicas.
    channels = [f"C{n:05d}" for n in range(SIZE.channels)]
    gids = [f"12{n:014d}" for n in range(1, SIZE.exports + 1)]
    watches: list[Watch] = []
    for n, gid in enumerate(gids):
        fake_asana.set_export(gid, rng.choice(["pending", "started"]), organization_name=f"Org {n}")
        for channel in rng.sample(channels, rng.choice([1, 1, 1, 2, 2, 3])):
            watches.append(Watch(channel, gid))
    rng.shuffle(watches)
    picks = [rng.randrange(REPLICAS) for _ in watches]

    def subscribe_one(i: int) -> None:
        live = fleet.live()
        subscribe(live[picks[i] % len(live)][1], fake_slack, watches[i], f"U{i:05d}")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(subscribe_one, range(len(watches))))
    cards = {w: find_card(fake_slack, w)["ts"] for w in watches}
    subscribed = time.monotonic()

    # Finish at random moments while replicas are killed and restarted at random.
    chaos = Chaos(rng, fleet, fake_asana, fake_slack, unfinished=list(gids))
    events: list[tuple[float, str, str]] = [
        (rng.uniform(1.0, SIZE.finish_window), "finish", gid) for gid in gids
    ]
    at = rng.uniform(*SIZE.kill_every)
    while at < SIZE.finish_window + 2:
        events.append((at, "kill", ""))
        at += rng.uniform(*SIZE.kill_every)
    slice_ = 0.8 * SIZE.finish_window / SIZE.hold_kills
    for n in range(SIZE.hold_kills):  # spread over the window, while exports remain
        events.append((1.0 + slice_ * (n + rng.random()), "hold", ""))
    events.sort()
    start = time.monotonic()
    for when, kind, gid in events:
        time.sleep(max(0.0, start + when - time.monotonic()))
        if kind == "finish":
            chaos.finish(gid)
        elif kind == "kill":
            chaos.random_kill()
        else:
            chaos.kill_between_post_and_commit()
    require(not chaos.unfinished, "every export finished")
    fleet.wait_restarts(timeout=60)

    # Drain: every watch told, or time is up; then a quiet spell for late doubles.
    engine = sa.create_engine(fresh_postgres_url)
    try:
        wait_until(lambda: untold_watches(engine) == 0, SIZE.drain_timeout, interval=0.25)
        drained = time.monotonic()
        time.sleep(3.0)  # > NOTIFY_GRACE_SECONDS + RECOVER_SECONDS
        rows = subscription_rows(engine)
    finally:
        engine.dispose()
    posts = stored_finished_posts(fake_slack)
    exit_codes = fleet.stop_all()
    elapsed = time.monotonic() - began
    tracebacks = fleet.logs().count("Traceback")

    by_sub = Counter(p["metadata"]["event_payload"]["subscription_id"] for p in posts)
    by_watch = Counter(
        Watch(p["channel"], str(p["metadata"]["event_payload"]["gid"])) for p in posts
    )
    row_by_id = {r.id: r for r in rows}
    row_by_watch = {Watch(r.channel_id, r.export_gid): r for r in rows}
    duplicates = sum(n - 1 for n in by_sub.values() if n > 1)
    missing = [r.id for r in rows if by_sub[r.id] == 0]
    never_ended = [r for r in rows if r.ended_at is None]
    stale_cards = [w for w, ts in cards.items() if not card_is_finished(fake_slack, w, ts)]
    print(
        f"chaos seed {seed}: posts expected {len(watches)}, posted {len(posts)},"
        f" duplicates {duplicates}, missing {len(missing)}, never ended {len(never_ended)},"
        f" stale cards {len(stale_cards)}, kills {chaos.kills} (between post and commit"
        f" {chaos.hold_kills}, orphaning {len(chaos.orphaned)} stored posts),"
        f" told {drained - start:.1f}s after the finishing began,"
        f" elapsed {elapsed:.1f}s (subscribing {subscribed - began:.1f}s),"
        f" tracebacks in logs {tracebacks}"
    )
    context = f"seed {seed}; replay with ASANA_BOT_CHAOS_SEED={seed}"

    # Exactly once: every watch one finished post, in its channel, about its export.
    assert fleet.errors == [], context
    assert len(rows) == len(watches) and set(row_by_watch) == set(watches), context
    assert duplicates == 0, (context, sorted(s for s, n in by_sub.items() if n > 1))
    assert missing == [], (context, missing)
    assert set(by_sub) == set(row_by_id), context
    assert set(by_watch) == set(watches) and set(by_watch.values()) == {1}, context
    for post in posts:
        row = row_by_id[post["metadata"]["event_payload"]["subscription_id"]]
        assert (post["channel"], str(post["metadata"]["event_payload"]["gid"])) == (
            row.channel_id,
            row.export_gid,
        ), context
        assert row.notified_ts == post["ts"], (context, row)
    assert all(row_by_watch[w].card_ts == ts for w, ts in cards.items()), context
    assert chaos.hold_kills >= max(1, SIZE.hold_kills // 2), (context, chaos.hold_kills)
    assert all(by_sub[sub_id] == 1 for sub_id in chaos.orphaned), context  # found in history
    assert exit_codes == [0] * REPLICAS, context
    assert tracebacks == 0, context
    if not FULL:
        assert elapsed < 120, context

    # Ended and shown as finished, whatever gap a kill landed in.
    assert [r for r in rows if r.ended_at is not None and r.end_reason != "finished"] == [], context
    assert never_ended == [], f"watches told but never ended, {context}: {never_ended}"
    assert stale_cards == [], f"cards never updated to finished, {context}: {stale_cards}"


# -- one kill aimed at one gap, deterministically ----------------------------------------

GID = "1200000000000777"


@pytest.fixture
def env(bot_env: dict[str, str], fresh_postgres_url: str) -> dict[str, str]:
    return chaos_env(bot_env, fresh_postgres_url)


@pytest.fixture
def processes() -> Iterator[list[BotProcess]]:
    """Every bot process a test starts; SIGKILLed at the end whatever happened."""
    started: list[BotProcess] = []
    yield started
    for process in started:
        process.kill()


def start(
    processes: list[BotProcess], tmp_path: Path, env: dict[str, str], name: str = ""
) -> BotProcess:
    process = BotProcess(tmp_path, {**env, "PORT": ""}, name=name or f"bot{len(processes)}")
    processes.append(process)
    return process.start(timeout=40)


@pytest.mark.timeout(90)
def test_kill_between_recording_the_ts_and_ending_leaves_no_active_watch(
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    env: dict[str, str],
    fresh_postgres_url: str,
    processes: list[BotProcess],
    tmp_path: Path,
) -> None:
    """A PostgreSQL trigger (test harness only) holds the UPDATE that ends a watch whose ts is
    already recorded; the replica running it is SIGKILLed, so that UPDATE never commits."""
    first = start(processes, tmp_path, env)
    engine = sa.create_engine(fresh_postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in GATE_DDL:
                conn.execute(sa.text(statement))
        fake_asana.set_export(GID, "started", organization_name="Gap")
        subscribe(first, fake_slack, Watch("CZOMBIE", GID))
        fake_asana.set_state(GID, "finished")

        def held_backend() -> list[Any]:
            with engine.connect() as conn:
                return list(conn.execute(sa.text(HELD_BACKENDS)))

        def ended() -> bool:
            return any(row.ended_at is not None for row in subscription_rows(engine))

        # With the fix there is no such UPDATE: the watch just ends and the kill changes nothing.
        outcome = wait_until(lambda: held_backend() or ended(), timeout=15, interval=0.05)
        held = outcome if isinstance(outcome, list) else None
        require(outcome, "the watch was told")
        require(
            held is None or sender(processes, held[0].client_port, POSTGRES_PORT) is first,
            "the held UPDATE comes from the replica",
        )
        first.kill()
        with engine.connect() as conn:
            conn.execute(sa.text("UPDATE chaos_gate SET held = false"))
        require(len(stored_finished_posts(fake_slack)) == 1, "Slack got the post")

        start(processes, tmp_path, env)
        wait_until(lambda: untold_watches(engine) == 0, timeout=10)
        time.sleep(3.0)  # NOTIFY_GRACE_SECONDS + RECOVER_SECONDS: recovery had its chance
        (row,) = subscription_rows(engine)
    finally:
        engine.dispose()
    require(len(stored_finished_posts(fake_slack)) == 1, "one post")
    assert row.ended_at is not None, f"told (ts {row.notified_ts}) but still watching: {row}"


#: A gate for the UPDATE that ends a watch whose post is already recorded (test harness only).
GATE_DDL = (
    "CREATE TABLE chaos_gate (held boolean NOT NULL)",
    "INSERT INTO chaos_gate VALUES (true)",
    """CREATE FUNCTION chaos_hold_end() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        WHILE (SELECT held FROM chaos_gate LIMIT 1) LOOP
            PERFORM pg_sleep(0.02);
        END LOOP;
        RETURN NEW;
    END $$""",
    """CREATE TRIGGER chaos_hold_end BEFORE UPDATE ON subscriptions FOR EACH ROW
    WHEN (OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL AND OLD.notified_ts IS NOT NULL)
    EXECUTE FUNCTION chaos_hold_end()""",
)
HELD_BACKENDS = (
    "SELECT pid, client_port FROM pg_stat_activity"
    " WHERE datname = current_database() AND wait_event = 'PgSleep'"
)


@pytest.mark.timeout(90)
def test_kill_between_finished_poll_and_card_updates_leaves_no_stale_card(
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    env: dict[str, str],
    processes: list[BotProcess],
    tmp_path: Path,
) -> None:
    """The first card edit is applied but its answer held; the replica is SIGKILLed there."""
    first = start(processes, tmp_path, env)
    watches = [Watch("CCARD1", GID), Watch("CCARD2", GID)]
    fake_asana.set_export(GID, "started", organization_name="Cards")
    for watch in watches:
        subscribe(first, fake_slack, watch)
    cards = {w: find_card(fake_slack, w)["ts"] for w in watches}
    fake_slack.set_delay_after_store("chat.update", math.inf)
    fake_asana.set_state(GID, "finished")
    held = wait_until(lambda: fake_slack.held_calls("chat.update"), timeout=15)
    require(held, "the finishing poll edits a card")
    first.kill()
    fake_slack.set_delay_after_store("chat.update", 0)
    fake_slack.release_held()

    start(processes, tmp_path, env)
    require(
        wait_until(lambda: len(stored_finished_posts(fake_slack)) == 2, timeout=15),
        "recovery posts the link to both channels",
    )
    wait_until(lambda: all(card_is_finished(fake_slack, w, ts) for w, ts in cards.items()), 5)
    stale = [w for w, ts in cards.items() if not card_is_finished(fake_slack, w, ts)]
    assert stale == [], f"cards still not finished: {stale}"


@pytest.mark.timeout(90)
def test_two_recoveries_of_one_crashed_claim_post_once(
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    env: dict[str, str],
    processes: list[BotProcess],
    tmp_path: Path,
) -> None:
    """A replica dies after claiming a watch, before posting. Two replicas read the history
    (nothing there); one clears the claim, re-claims and posts; then the other clears that
    claim too, on its stale reading, and posts again."""
    first = start(processes, tmp_path, env)
    fake_asana.set_export(GID, "started", organization_name="Twice")
    subscribe(first, fake_slack, Watch("CTWICE", GID))
    # Claimed, then killed before posting: the link policy's conversations.info comes between.
    fake_slack.set_delay_after_store("conversations.info", math.inf)
    fake_asana.set_state(GID, "finished")
    require(wait_until(lambda: fake_slack.held_calls("conversations.info"), 15), "claimed")
    first.kill()
    fake_slack.set_delay_after_store("conversations.info", 0)
    fake_slack.release_held()
    require(stored_finished_posts(fake_slack) == [], "nothing posted yet")

    # Two replicas recover it; both history reads (empty) are held.
    fake_slack.set_delay_after_store("conversations.history", math.inf)
    later = [
        threading.Thread(target=start, args=(processes, tmp_path, env, f"recoverer{n}"))
        for n in range(2)
    ]
    for thread in later:
        thread.start()
    for thread in later:
        thread.join(60)
    second, third = processes[1:]
    require(all(p.proc and p.proc.poll() is None for p in (second, third)), "both run")

    def reader(process: BotProcess) -> HeldCall | None:
        return next(
            (
                h
                for h in fake_slack.held_calls("conversations.history")
                if h.holding
                and h.peer is not None
                and sender([process], h.peer[1], fake_slack.port) is process
            ),
            None,
        )

    def both_read() -> tuple[HeldCall, HeldCall] | None:
        first_read, second_read = reader(second), reader(third)
        return (first_read, second_read) if first_read and second_read else None

    reads = wait_until(both_read, 15)
    require(reads, "both replicas read the history")
    assert reads is not None
    fake_slack.set_delay_after_store("chat.postMessage", math.inf)
    fake_slack.release_held([reads[0]])  # the second replica clears, re-claims and posts
    require(wait_until(lambda: stored_finished_posts(fake_slack), 10), "the second replica posts")
    fake_slack.release_held([reads[1]])  # the third acts on what it read before that post
    wait_until(lambda: len(stored_finished_posts(fake_slack)) > 1, timeout=4)
    fake_slack.clear_faults()
    fake_slack.release_held()
    time.sleep(3.0)  # NOTIFY_GRACE_SECONDS + RECOVER_SECONDS: recovery settles
    posts = stored_finished_posts(fake_slack)
    assert len(posts) == 1, f"{len(posts)} finished posts for one watch"
