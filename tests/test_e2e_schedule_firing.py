"""Recurring exports fire (issue 11, items 4 and 5), in process with an injected clock.

Each scenario is the real runtime and Bolt app against the fake Asana and fake Slack over real
HTTP; the clock moves only when told, and `fire_schedules` runs the schedule job once, as the
scheduler does every few seconds. Covered: an occurrence starts one export watched in the
channel; two replicas racing one occurrence start one; occurrences missed while every replica was
down fire once, late; transient refusals are retried inside the window, then one failure post;
401/402/403 pause with one post and resume when a run works; an archived channel ends the
schedule; an attempt whose answer never came (or whose replica died) is never repeated blind.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.store import RunOutcome
from bot.testing import finished_posts, posts, text_of
from bot.testing.scenario import Scenario
from tests.conftest import StartScenario

ORG = "4200000000000042"
ADMIN = "U0ADMIN"
SETTINGS = {"LINK_POLICY": "anywhere", "ASANA_ORGANIZATION_GID": ORG, "ADMIN_USERS": ADMIN}
#: Ten seconds into a minute, far from the real date: every test starts its clock here.
START = datetime(2030, 1, 6, 8, 0, 10, tzinfo=UTC)
EVERY_MINUTE = 'schedule cron "* * * * *"'


def creates(asana: FakeAsana) -> list[Any]:
    return [r for r in asana.requests if r.method == "POST"]


def schedule_posts(slack: FakeSlack, channel: str = "C0001") -> list[str]:
    return [text_of(p) for p in posts(slack, channel) if "Schedule #" in str(p.get("text"))]


def cards(slack: FakeSlack, channel: str = "C0001") -> list[str]:
    """The status cards of exports a schedule started, as posted (the card names the schedule)."""
    return [card_text(p) for p in posts(slack, channel) if "From schedule #" in str(p.get("text"))]


def the_card(slack: FakeSlack, channel: str = "C0001") -> dict[str, Any]:
    """The schedule's export card as it stands now (edits applied); the schedule's audit line
    is the channel's first message."""
    (card,) = [m for m in slack.messages(channel) if "From schedule #" in str(m.get("text"))]
    return card


def card_text(body: dict[str, Any]) -> str:
    """The fallback text and every context line of a card, as people read them."""
    lines = [str(body.get("text"))]
    for block in body.get("blocks") or []:
        lines += [e["text"] for e in block.get("elements", []) if block["type"] == "context"]
    return "\n".join(lines)


def to_start(*bots: Scenario) -> None:
    for bot in bots:
        bot.clock.advance((START - bot.clock()).total_seconds())


async def scheduled(bot: Scenario, spec: str = EVERY_MINUTE, channel: str = "C0001") -> None:
    answer = await bot.command(spec, user_id=ADMIN, channel=channel)
    assert "Schedule #" in answer["text"], answer["text"]


@pytest.fixture
async def sbot(start_scenario: StartScenario, fake_asana: FakeAsana) -> Scenario:
    fake_asana.set_organization(ORG, "Acme")
    bot = await start_scenario(**SETTINGS)
    to_start(bot)
    return bot


async def test_an_occurrence_starts_one_export_watched_in_the_channel(
    fake_asana: FakeAsana, fake_slack: FakeSlack, sbot: Scenario
) -> None:
    await scheduled(sbot)
    assert await sbot.fire_schedules(after=30) == 0, "not due before its minute"
    assert await sbot.fire_schedules(after=30) == 1
    assert await sbot.fire_schedules(after=5) == 0, "an occurrence fires once"
    (post,) = creates(fake_asana)
    assert post.body == {"data": {"organization": ORG}}
    (gid,) = fake_asana.export_gids()
    assert schedule_posts(fake_slack) == [], "the card says it all: no post of its own"
    (card,) = cards(fake_slack)
    assert f"`{gid}`" in card and "pending" in card and "late" not in card
    assert 'From schedule #1 · cron "* * * * *" UTC · the run of 2030-01-06 08:01 UTC' in card
    fake_asana.set_state(gid, "finished")
    await sbot.run_until(lambda: finished_posts(fake_slack, "C0001"))
    await sbot.run_until(lambda: "is finished" in text_of(the_card(fake_slack)))
    edited = card_text(the_card(fake_slack))
    assert 'From schedule #1 · cron "* * * * *" UTC' in edited, "every edit says it"
    (run,) = await sbot.runtime.store.schedule_runs(1)
    assert (run.outcome, run.export_gid, run.attempts) == (RunOutcome.CREATED, gid, 1)
    assert await sbot.fire_schedules(after=60) == 1, "the next minute is the next occurrence"
    assert len(creates(fake_asana)) == 2
    assert sbot.tracebacks == []


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_two_replicas_racing_one_occurrence_start_one_export(
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    start_scenario: StartScenario,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    database: str,
) -> None:
    fake_asana.set_organization(ORG, "Acme")
    url = (
        request.getfixturevalue("fresh_postgres_url")
        if database == "postgresql"
        else f"sqlite:///{tmp_path / 'shared.db'}"
    )
    a = await start_scenario(database_url=url, **SETTINGS)
    b = await start_scenario(database_url=url, **SETTINGS)
    to_start(a, b)
    await scheduled(a)
    for _ in range(3):
        a.clock.advance(60)
        b.clock.advance(60)
        made = await asyncio.gather(a.fire_schedules(), b.fire_schedules())
        assert sorted(made) == [0, 1], made
    assert len(creates(fake_asana)) == 3, "one export per occurrence"
    assert len(cards(fake_slack)) == 3, "one card per occurrence"
    runs = await a.runtime.store.schedule_runs(1)
    assert [r.outcome for r in runs] == [RunOutcome.CREATED] * 3
    assert a.tracebacks == [] and b.tracebacks == []


async def test_occurrences_missed_while_down_fire_once_late(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario, tmp_path: Path
) -> None:
    fake_asana.set_organization(ORG, "Acme")
    url = f"sqlite:///{tmp_path / 'kept.db'}"
    first = await start_scenario(database_url=url, **SETTINGS)
    to_start(first)
    await scheduled(first)
    # Every replica is down for ten minutes; a new one starts and runs the job at once.
    restarted = await start_scenario(database_url=url, **SETTINGS)
    to_start(restarted)
    restarted.clock.advance(10 * 60)
    assert await restarted.fire_schedules() == 1
    assert await restarted.fire_schedules(after=1) == 0
    assert len(creates(fake_asana)) == 1, "coalesced: one export, not ten"
    (late,) = cards(fake_slack)
    assert "the run of 2030-01-06 08:10 UTC · :hourglass: late" in late
    assert "it stands for 10 occurrences missed while the bot was down" in late
    (run,) = await restarted.runtime.store.schedule_runs(1)
    assert run.occurrence_at == datetime(2030, 1, 6, 8, 10, tzinfo=UTC), "the newest one"


async def fire_until(bot: Scenario, done: Any, *, step: float, within: float = 15.0) -> None:
    """Advance the clock by `step` and run the job until `done()` (the bot's shared 429 gate
    also waits for Asana's Retry-After in real time, so this polls with a real deadline)."""
    deadline = asyncio.get_running_loop().time() + within
    while not await done():
        assert asyncio.get_running_loop().time() < deadline, "the condition never came"
        await bot.fire_schedules(after=step)
        await asyncio.sleep(0.05)


#: The Asana client's own in-call retries off, so a 429 reaches the schedule's retries at once.
NO_CALL_RETRIES = {**SETTINGS, "ASANA_MAX_RETRY_SECONDS": "0"}


async def test_a_transient_refusal_is_retried_then_works(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    fake_asana.set_organization(ORG, "Acme")
    sbot = await start_scenario(**NO_CALL_RETRIES)
    to_start(sbot)
    await scheduled(sbot, "schedule daily 08:01")
    fake_asana.fail(429, method="POST", retry_after=1, times=1)
    assert await sbot.fire_schedules(after=60) == 1
    (run,) = await sbot.runtime.store.schedule_runs(1)
    assert run.outcome is RunOutcome.RETRYING and run.next_attempt_at is not None
    assert await sbot.fire_schedules() == 0, "not before its backoff"

    async def created() -> bool:
        (run,) = await sbot.runtime.store.schedule_runs(1)
        return run.outcome is RunOutcome.CREATED

    await fire_until(sbot, created, step=10)
    assert len(creates(fake_asana)) == 2 and len(fake_asana.export_gids()) == 1
    (card,) = cards(fake_slack)
    assert "From schedule #1" in card and "late" not in card, "a retry is not late"
    assert sbot.tracebacks == []


async def test_transient_refusals_past_the_window_post_one_failure(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    fake_asana.set_organization(ORG, "Acme")
    bot = await start_scenario(**NO_CALL_RETRIES, SCHEDULE_RETRY_WINDOW_SECONDS="100")
    to_start(bot)
    await scheduled(bot, "schedule daily 08:01")
    fake_asana.fail(429, method="POST", retry_after=1, times=500)
    await bot.fire_schedules(after=60)

    async def failed() -> bool:
        (run,) = await bot.runtime.store.schedule_runs(1)
        return run.outcome is RunOutcome.FAILED

    await fire_until(bot, failed, step=20)
    for _ in range(3):
        await bot.fire_schedules(after=60)
    assert fake_asana.export_gids() == []
    (run,) = await bot.runtime.store.schedule_runs(1)
    assert run.attempts >= 3, "retried inside the window"
    (failed_post,) = schedule_posts(fake_slack)
    assert "started no export" in failed_post and "rate limiting" in failed_post
    assert bot.tracebacks == []


@pytest.mark.parametrize("status", [401, 402, 403])
async def test_a_refusal_that_needs_a_person_pauses_once_and_resumes(
    fake_asana: FakeAsana, fake_slack: FakeSlack, sbot: Scenario, status: int
) -> None:
    await scheduled(sbot)
    fake_asana.fail(status, method="POST", times=2)
    await sbot.fire_schedules(after=60)
    await sbot.fire_schedules(after=60)
    (paused,) = schedule_posts(fake_slack)
    assert "Schedule #1 is paused" in paused
    listed = text_of(await sbot.command("schedules", user_id=ADMIN))
    assert "paused" in listed
    await sbot.fire_schedules(after=60)
    resumed = schedule_posts(fake_slack)[-1]
    assert "started export" in resumed and "runs again" in resumed
    assert len(cards(fake_slack)) == 1
    row = await sbot.runtime.store.schedule(1)
    assert row is not None and row.paused_reason is None
    assert len(schedule_posts(fake_slack)) == 2
    outcomes = [r.outcome for r in await sbot.runtime.store.schedule_runs(1)]
    assert outcomes == [RunOutcome.PAUSED, RunOutcome.PAUSED, RunOutcome.CREATED]


async def test_an_archived_channel_ends_the_schedule(
    fake_asana: FakeAsana, fake_slack: FakeSlack, sbot: Scenario
) -> None:
    fake_slack.add_channel("CARCHIVE")
    await scheduled(sbot, channel="CARCHIVE")
    fake_slack.add_channel("CARCHIVE", is_archived=True)
    await sbot.fire_schedules(after=60)
    row = await sbot.runtime.store.schedule(1)
    assert row is not None and row.ended_at is not None
    assert row.end_reason == "slack_is_archived"
    await sbot.fire_schedules(after=60)
    assert len(creates(fake_asana)) == 1, "an ended schedule fires no more"
    assert sbot.tracebacks == []


@pytest.mark.parametrize("fault", ["server_error", "reset"])
async def test_an_unknown_outcome_is_said_and_never_repeated(
    fake_asana: FakeAsana, fake_slack: FakeSlack, sbot: Scenario, fault: str
) -> None:
    await scheduled(sbot, "schedule daily 08:01")
    if fault == "reset":
        fake_asana.fail(method="POST", reset=True, times=5)
    else:
        fake_asana.fail(502, method="POST", times=5)
    await sbot.fire_schedules(after=60)
    (unknown,) = schedule_posts(fake_slack)
    assert "I do not know whether an export was started" in unknown
    for _ in range(3):
        await sbot.fire_schedules(after=20)
    assert len(creates(fake_asana)) == 1, "the same occurrence is never asked again"
    (run,) = await sbot.runtime.store.schedule_runs(1)
    assert run.outcome is RunOutcome.UNKNOWN


@pytest.mark.parametrize("removed", [False, True])
async def test_an_attempt_left_by_a_dead_replica_is_unknown_not_repeated(
    fake_asana: FakeAsana, fake_slack: FakeSlack, sbot: Scenario, removed: bool
) -> None:
    """The aimed kill, in process: a replica marked the attempt, then died before recording.
    Removing the schedule meanwhile does not silence it: the request may have reached Asana."""
    await scheduled(sbot, "schedule daily 08:01")
    store = sbot.runtime.store
    occurrence = START.replace(second=0) + timedelta(minutes=1)
    sbot.clock.advance(60)
    run = await store.claim_run(1, occurrence, now=sbot.clock())
    assert run is not None and await store.start_run_attempt(run, now=sbot.clock()) is not None
    assert await sbot.fire_schedules() == 0, "its own replica may still be asking"
    if removed:
        await store.end_schedule(1, now=sbot.clock(), reason="removed by U0ADMIN")
    await sbot.fire_schedules(after=91)  # past LEASE_SECONDS + the Asana call: it is gone
    assert creates(fake_asana) == [], "never asked again blind"
    (unknown,) = schedule_posts(fake_slack)
    assert "I do not know whether an export was started" in unknown
    runs = await store.schedule_runs(1)
    assert runs[0].outcome is RunOutcome.UNKNOWN and runs[0].attempts == 1
    await sbot.fire_schedules(after=120)
    assert len(schedule_posts(fake_slack)) == 1, "told once"


async def test_unwatching_a_schedules_export_keeps_its_origin_on_the_card(
    fake_asana: FakeAsana, fake_slack: FakeSlack, sbot: Scenario
) -> None:
    await scheduled(sbot, "schedule weekly sun 08:01 tz Europe/Berlin")
    sbot.clock.advance(7 * 24 * 3600)  # the next Sunday, 08:01 in Berlin, is past: late
    assert await sbot.fire_schedules() == 1
    (gid,) = fake_asana.export_gids()
    answer = await sbot.command(f"unwatch {gid}", user_id=ADMIN)
    assert "Stopped watching" in answer["text"]
    await sbot.settle()
    card = card_text(the_card(fake_slack))
    assert "No longer watching" in card, card
    assert "From schedule #1 · weekly sun 08:01 Europe/Berlin" in card and "late" in card


@pytest.mark.parametrize(
    "died", ["after_recording", "after_watching", "after_the_card", "after_the_card_then_finished"]
)
async def test_a_run_whose_replica_died_after_asana_answered_is_watched_once(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario, died: str
) -> None:
    """A replica recorded the new export's gid (its creation row), then died before the run
    was recorded: another replica finds the gid, watches it with one card, asks Asana nothing.

    "after_the_card_then_finished": the card's ts was lost, and the export finished and was
    announced before the take-over, so no poll could edit the card: the take-over does.

    The clock starts at the real time here: Slack's history is searched by real timestamps."""
    from bot import watching
    from bot.creating import CreateRequest
    from bot.models import Export, ExportState
    from bot.schedule_cards import run_origin
    from bot.schedule_firing import run_key
    from bot.store import CreationOutcome, subscriptions

    fake_asana.set_organization(ORG, "Acme")
    sbot = await start_scenario(**SETTINGS)
    occurrence = sbot.clock().replace(second=0, microsecond=0) + timedelta(minutes=1)
    await scheduled(sbot, occurrence.strftime("schedule daily %H:%M"))
    store, rt = sbot.runtime.store, sbot.runtime
    sbot.clock.advance((occurrence - sbot.clock()).total_seconds() + 1)
    now = sbot.clock()
    claimed = await store.claim_run(1, occurrence, now=now)
    assert claimed is not None
    run = await store.start_run_attempt(claimed, now=now)
    assert run is not None
    gid = "1210000000000777"
    fake_asana.set_export(gid, "pending", organization_gid=ORG)
    request = CreateRequest(ORG, "T0001", "C0001", ADMIN, run_key(1, occurrence, run.attempts))
    creation, _ = await store.claim_creation(
        request_key=request.request_key,
        team_id="T0001",
        channel_id="C0001",
        user_id=ADMIN,
        organization_gid=ORG,
        now=now,
    )
    await store.record_creation(
        creation.id, outcome=CreationOutcome.CREATED, now=now, export_gid=gid
    )
    if died != "after_recording":
        export = Export(gid, ExportState.PENDING, organization_gid=ORG)
        sub, _ = await store.subscribe(
            team_id="T0001",
            channel_id="C0001",
            user_id=ADMIN,
            export=export,
            now=now,
            next_poll_at=now,
            schedule_run_id=run.id,
        )
        if died.startswith("after_the_card"):  # Slack took the card; its ts was never recorded
            schedule = await store.schedule(1)
            assert schedule is not None
            await watching.post_card(
                rt, sub, export, next_check_at=None, origin=run_origin(schedule, run)
            )
            forget_cards = subscriptions.update().values(card_ts=None)
            await store.write(lambda conn: conn.execute(forget_cards))
        if died == "after_the_card_then_finished":
            fake_asana.set_state(gid, "finished")
            await sbot.run_until(lambda: finished_posts(fake_slack, "C0001"))
            assert "is pending" in card_text(the_card(fake_slack)), "no poll could edit it"
    assert await sbot.fire_schedules() == 0, "its own replica may still be at it"
    await sbot.fire_schedules(after=91)  # past LEASE_SECONDS + the Asana call: it is gone
    assert creates(fake_asana) == [], "Asana is asked nothing"
    assert schedule_posts(fake_slack) == [], "not unknown: the gid was recorded"
    (card,) = cards(fake_slack)
    assert f"`{gid}`" in card and "From schedule #1" in card
    (run,) = await store.schedule_runs(1)
    assert (run.outcome, run.export_gid) == (RunOutcome.CREATED, gid)
    if died == "after_the_card_then_finished":
        card = card_text(the_card(fake_slack))
        assert "is finished" in card and "From schedule #1" in card, card
        assert len(finished_posts(fake_slack, "C0001")) == 1 and sbot.tracebacks == []
        return
    (watch,) = await store.active_subscriptions(gid)
    assert watch.schedule_run_id == run.id and watch.card_ts == the_card(fake_slack)["ts"]
    fake_asana.set_state(gid, "finished")
    await sbot.run_until(lambda: finished_posts(fake_slack, "C0001"))
    await sbot.fire_schedules(after=91)
    assert len(cards(fake_slack)) == 1 and len(finished_posts(fake_slack, "C0001")) == 1
    assert sbot.tracebacks == []


async def test_a_database_outage_skips_the_job_without_a_traceback(
    fake_asana: FakeAsana, sbot: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    await scheduled(sbot)

    async def down() -> list[Any]:
        raise OperationalError("SELECT 1", {}, Exception("the database is restarting"))

    monkeypatch.setattr(sbot.runtime.store, "active_schedules", down)
    assert await sbot.fire_schedules(after=60) == 0
    assert "schedule job skipped, database unavailable" in sbot.logs()
    assert sbot.tracebacks == []
    monkeypatch.undo()
    assert await sbot.fire_schedules() == 1, "the next run fires the occurrence"
    assert len(creates(fake_asana)) == 1


# ------------------------------------------------------------------------------ real process


def test_the_real_process_fires_a_missed_occurrence_once_on_start_up(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot_env: dict[str, str], tmp_path: Path
) -> None:
    """The console script's schedule job runs at start-up: a schedule whose occurrences passed
    while no bot ran fires once, late, and its export is watched with a card."""
    from bot.db import create_engine, upgrade
    from bot.store import Store
    from bot.testing import FAST_WATCH, BotProcess, wait_until

    fake_asana.set_organization(ORG, "Acme")

    # Daily, two minutes ago, created two days ago: two missed runs, the next one is tomorrow.
    daily = (datetime.now(UTC) - timedelta(minutes=2)).strftime("daily %H:%M")

    async def seed() -> None:
        engine = create_engine(bot_env["DATABASE_URL"])
        try:
            await upgrade(engine)
            await Store(engine).add_schedule(
                team_id="T0001",
                channel_id="C0001",
                organization_gid=ORG,
                trigger_text=daily,
                timezone="UTC",
                created_by=ADMIN,
                now=datetime.now(UTC) - timedelta(days=2, minutes=1),
            )
        finally:
            await engine.dispose()

    asyncio.run(seed())
    bot = BotProcess(tmp_path, {**bot_env, **FAST_WATCH, **SETTINGS}).start()
    try:
        wait_until(lambda: cards(fake_slack), 20, "the export's card")
        (late,) = cards(fake_slack)
        assert "late (it stands for 2 occurrences missed while the bot was down)" in late
        assert len(creates(fake_asana)) == 1, "coalesced: one export"
        assert schedule_posts(fake_slack) == []
    finally:
        bot.stop()
