"""Stall notes and link expiry (issue 13, items 2 and 3), in process with an injected clock.

Each bot is a scenario (bot.testing.scenario) on a real SQLite file (or PostgreSQL), speaking real
HTTP to the fake Asana and fake Slack; the follow-up job (`bot.followups.Followups`) runs when the
test says, the clock moved by the test. "Replicas" are several bots on one database; a
"restart" is a new bot on the database the old one left.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack, validate_blocks
from bot.followup_store import FollowupStore
from bot.followups import Followups
from bot.link_expiry import EditOutcome, edit_outcome
from bot.messages import FRESH_LINK_ACTION, Message, carries_link, render_finished_post
from bot.models import LINK_VALIDITY, Export, ExportState
from bot.slack_out import Failure, SlackResult
from bot.stall import stall_due
from bot.testing import event_posts, finished_posts, posts, text_of
from bot.testing.scenario import Scenario
from tests.conftest import StartScenario
from tests.golden_messages import renderings

GID = "1200000000001301"
STALL = 600.0  # STALL_AFTER of these tests, in seconds
CANARY = "https://exports.example.invalid/org.zip?X-Amz-Signature=canary-13f0ab"


def stall_notes(slack: FakeSlack, channel: str | None = None) -> list[dict]:
    return event_posts(slack, "asana_export_stalled", channel)


def updates_of(slack: FakeSlack, ts: str) -> list[dict]:
    return [c.body for c in slack.calls_to("chat.update") if c.ok and c.body.get("ts") == ts]


async def bot_on(start_scenario: StartScenario, database_url: str | None = None, **extra: str):
    settings = {
        "LINK_POLICY": "anywhere",
        "STALL_AFTER": str(int(STALL)),
        # Longer than the replicas' clocks drift apart while a loaded machine builds them.
        "NOTIFY_GRACE_SECONDS": "60",
    } | extra
    return await start_scenario(database_url=database_url, **settings)


async def watch(bot: Scenario, channel: str = "C1") -> str:
    """Watch GID in `channel`; the card's ts."""
    answer = await bot.command(GID, channel=channel)
    assert "Watching" in answer["text"], answer
    await bot.settle()
    (sub,) = [
        s for s in await bot.runtime.store.active_subscriptions(GID) if s.channel_id == channel
    ]
    assert sub.card_ts
    return sub.card_ts


def same_time(replicas: list[Scenario], after: float) -> None:
    """Every replica's clock `after` seconds past the latest of them: one time for all."""
    target = max(bot.clock() for bot in replicas) + timedelta(seconds=after)
    for bot in replicas:
        bot.clock.advance((target - bot.clock()).total_seconds())


async def run(bot: Scenario, after: float = 0.0) -> tuple[int, int]:
    bot.clock.advance(after)
    return await Followups(bot.runtime).run()


# -- pure decisions -----------------------------------------------------------------------


def test_stall_is_due_after_stall_after_and_then_once_per_stall_after() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    every = timedelta(hours=6)
    due = lambda now, last=None: stall_due(since=t0, last_noted=last, now=now, every=every)  # noqa: E731
    assert not due(t0 + every - timedelta(seconds=1))
    assert due(t0 + every)
    assert not due(t0 + every * 1.5, last=t0 + every)
    assert due(t0 + every * 2, last=t0 + every)


def test_an_edit_is_done_when_made_or_impossible_and_retried_otherwise() -> None:
    assert edit_outcome(SlackResult(ts="1.2")) is EditOutcome.DONE
    assert edit_outcome(SlackResult(error="message_not_found", failure=Failure.TRANSIENT)) is (
        EditOutcome.DONE
    )
    assert edit_outcome(SlackResult(error="is_archived", failure=Failure.CHANNEL)) is (
        EditOutcome.DONE
    )
    assert edit_outcome(SlackResult(error="ratelimited", failure=Failure.TRANSIENT)) is (
        EditOutcome.RETRY
    )
    assert edit_outcome(SlackResult(error="token_revoked", failure=Failure.TOKEN)) is (
        EditOutcome.RETRY
    )


# -- stall --------------------------------------------------------------------------------


async def test_a_stalled_export_gets_one_note_per_stall_after_in_each_cards_thread(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    fake_asana.set_export(GID, "started", organization_name="Acme <!channel>")
    bot = await bot_on(start_scenario)
    card1 = await watch(bot, "C1")
    card2 = await watch(bot, "C2")
    assert await run(bot, after=STALL - 30) == (0, 0), "not stalled yet"
    assert await run(bot, after=60) == (2, 0)
    notes = stall_notes(fake_slack)
    assert sorted((n["channel"], n["thread_ts"]) for n in notes) == [("C1", card1), ("C2", card2)]
    note = text_of(notes[0])
    assert "has been started for" in note and "status.asana.com" in note
    assert "<!channel>" not in note and "&lt;!channel&gt;" in note, "Asana's strings escaped"
    assert notes[0]["metadata"]["event_payload"]["note"] == 1
    assert await run(bot) == (0, 0) and await run(bot, after=STALL / 2) == (0, 0), "once per period"
    assert await run(bot, after=STALL / 2 + 1) == (2, 0), "again after another STALL_AFTER"
    assert [n["metadata"]["event_payload"]["note"] for n in stall_notes(fake_slack, "C1")] == [1, 2]
    assert len(posts(fake_slack, "C1")) == 1, "the notes are replies, not new posts"


async def test_a_finished_export_gets_no_stall_note(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    fake_asana.set_export(GID, "started")
    bot = await bot_on(start_scenario)
    await watch(bot)
    fake_asana.set_state(GID, "finished")
    await bot.run_until(lambda: finished_posts(fake_slack))
    await run(bot, after=STALL * 3)
    assert stall_notes(fake_slack) == []


async def test_stall_note_once_across_a_restart(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario, tmp_path: Path
) -> None:
    fake_asana.set_export(GID, "pending")
    first = await bot_on(start_scenario)
    await watch(first)
    assert await run(first, after=STALL + 1) == (1, 0)
    again = await bot_on(start_scenario)  # the restarted process, same database
    same_time([first, again], 0)
    assert await run(again) == (0, 0)
    assert await run(again, after=STALL / 2) == (0, 0)
    assert len(stall_notes(fake_slack)) == 1


async def race_stall(
    fake_asana: FakeAsana, fake_slack: FakeSlack, replicas: list[Scenario]
) -> None:
    fake_asana.set_export(GID, "started")
    await watch(replicas[0], "C1")
    await watch(replicas[0], "C2")
    same_time(replicas, STALL + 120)  # well past: the export was made after the clocks started
    await asyncio.gather(*(Followups(bot.runtime).run() for bot in replicas))
    await asyncio.gather(*(Followups(bot.runtime).run() for bot in replicas))
    assert sorted(n["channel"] for n in stall_notes(fake_slack)) == ["C1", "C2"]


async def test_stall_note_once_on_racing_replicas(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    await race_stall(fake_asana, fake_slack, [await bot_on(start_scenario) for _ in range(3)])


async def test_stall_note_once_on_racing_replicas_postgres(
    fresh_postgres_url: str,
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    start_scenario: StartScenario,
) -> None:
    replicas = [await bot_on(start_scenario, fresh_postgres_url) for _ in range(3)]
    await race_stall(fake_asana, fake_slack, replicas)


async def stall_candidate_channels(bot: Scenario) -> list[str]:
    every = timedelta(seconds=STALL)
    found = await FollowupStore(bot.runtime.store).stall_candidates(
        ("pending", "started"), now=bot.clock(), every=every
    )
    return sorted(c.subscription.channel_id for c in found)


async def check_stall_candidates_are_the_rows_to_act_on(bot: Scenario) -> None:
    """The follow-up pass reads only watches with a note due or a claim unrecorded."""
    for channel in ("C1", "C2", "C3"):
        await watch(bot, channel)
    assert await stall_candidate_channels(bot) == [], "none has run STALL_AFTER yet"
    bot.clock.advance(STALL + 1)
    assert await stall_candidate_channels(bot) == ["C1", "C2", "C3"]
    subs = {s.channel_id: s for s in await bot.runtime.store.active_subscriptions(GID)}
    store, every = FollowupStore(bot.runtime.store), timedelta(seconds=STALL)
    for channel in ("C1", "C2"):
        claimed_at = bot.clock()
        assert await store.claim_stall(subs[channel].id, now=claimed_at, every=every)
        if channel == "C1":
            await store.record_stall(subs[channel].id, claimed_at=claimed_at)
    assert await stall_candidate_channels(bot) == ["C2", "C3"], "C1 noted; C2's claim unrecorded"
    bot.clock.advance(STALL + 1)
    assert await stall_candidate_channels(bot) == ["C1", "C2", "C3"], "C1 due again"


async def test_stall_candidates_are_the_rows_to_act_on(
    fake_asana: FakeAsana, start_scenario: StartScenario
) -> None:
    fake_asana.set_export(GID, "started")
    await check_stall_candidates_are_the_rows_to_act_on(await bot_on(start_scenario))


async def test_stall_candidates_are_the_rows_to_act_on_postgres(
    fresh_postgres_url: str, fake_asana: FakeAsana, start_scenario: StartScenario
) -> None:
    fake_asana.set_export(GID, "started")
    bot = await bot_on(start_scenario, fresh_postgres_url)
    await check_stall_candidates_are_the_rows_to_act_on(bot)


async def test_a_stall_note_slack_refused_is_tried_again(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    fake_asana.set_export(GID, "started")
    bot = await bot_on(start_scenario)
    await watch(bot)
    fake_slack.fail("chat.postMessage", "fatal_error", times=1)
    assert await run(bot, after=STALL + 1) == (0, 0)
    assert await run(bot, after=1) == (1, 0), "the claim was given back"


# -- link expiry --------------------------------------------------------------------------


async def finished(bot: Scenario, fake_asana: FakeAsana, fake_slack: FakeSlack) -> dict:
    fake_asana.set_export(GID, "started", organization_name="Acme", download_url=CANARY)
    await watch(bot)
    fake_asana.set_state(GID, "finished")
    (post,) = await bot.run_until(lambda: finished_posts(fake_slack))
    return post


def notified_ts(fake_slack: FakeSlack) -> str:
    (call,) = [
        c
        for c in fake_slack.calls_to("chat.postMessage")
        if c.ok and (c.body.get("metadata") or {}).get("event_type") == "asana_export_finished"
    ]
    return call.response["ts"]


async def test_an_expired_link_is_removed_from_the_post_once_and_the_button_still_works(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario, tmp_path: Path
) -> None:
    bot = await bot_on(start_scenario)
    post = await finished(bot, fake_asana, fake_slack)
    assert CANARY in json.dumps(post["blocks"])
    ts = notified_ts(fake_slack)
    assert await run(bot, after=LINK_VALIDITY.total_seconds() - 60) == (0, 0), "still valid"
    assert updates_of(fake_slack, ts) == []
    assert await run(bot, after=61) == (0, 1)
    (edit,) = updates_of(fake_slack, ts)
    shown = text_of(edit)
    assert CANARY not in shown and "expired at" in shown and "Get a fresh link" in shown
    assert FRESH_LINK_ACTION in shown
    assert "X-Amz" not in json.dumps(fake_slack.message("C1", ts)), "gone from the channel"
    assert await run(bot, after=3600) == (0, 0) and len(updates_of(fake_slack, ts)) == 1
    # The button kept on the edited post still gives the presser a fresh link.
    response = await bot.click(action_id=FRESH_LINK_ACTION, value=GID, channel_id="C1")
    assert response.status == 200
    await bot.settle()
    (answer,) = [r for r in fake_slack.responses() if "Fresh download link" in str(r.body)]
    assert answer.body["response_type"] == "ephemeral"
    # The canary: the link is nowhere in the logs or the database.
    assert CANARY not in bot.logs()
    assert b"canary-13f0ab" not in (tmp_path / "bot.db").read_bytes()


async def test_a_post_without_a_link_is_not_edited(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    bot = await bot_on(start_scenario, LINK_POLICY="button")
    post = await finished(bot, fake_asana, fake_slack)
    assert CANARY not in json.dumps(post["blocks"])
    await run(bot, after=LINK_VALIDITY.total_seconds() * 2)
    assert (
        fake_slack.calls_to("chat.update") == []
        or updates_of(fake_slack, notified_ts(fake_slack)) == []
    )


async def test_expiry_edit_once_across_a_restart_and_taken_over_after_a_crash(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    first = await bot_on(start_scenario, NOTIFY_GRACE_SECONDS="60")
    await finished(first, fake_asana, fake_slack)
    ts = notified_ts(fake_slack)
    first.clock.advance(LINK_VALIDITY.total_seconds() + 1)
    # The first replica claims the edit and dies before making it.
    rows = await FollowupStore(first.runtime.store).expiry_candidates(first.clock())
    (candidate,) = rows
    store = FollowupStore(first.runtime.store)
    now = first.clock()
    assert await store.claim_expiry(candidate.subscription.id, now=now, stale_before=now)
    restarted = await bot_on(start_scenario, NOTIFY_GRACE_SECONDS="60")
    same_time([first, restarted], 0)
    assert await run(restarted, after=30) == (0, 0), "within the grace: its owner may be at work"
    assert await run(restarted, after=31) == (0, 1)
    assert await run(restarted, after=3600) == (0, 0)
    assert len(updates_of(fake_slack, ts)) == 1


async def race_expiry(
    fake_asana: FakeAsana, fake_slack: FakeSlack, replicas: list[Scenario]
) -> None:
    await finished(replicas[0], fake_asana, fake_slack)
    ts = notified_ts(fake_slack)
    same_time(replicas, LINK_VALIDITY.total_seconds() + 5)
    await asyncio.gather(*(Followups(bot.runtime).run() for bot in replicas))
    await asyncio.gather(*(Followups(bot.runtime).run() for bot in replicas))
    assert len(updates_of(fake_slack, ts)) == 1


async def test_expiry_edit_once_on_racing_replicas(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    await race_expiry(fake_asana, fake_slack, [await bot_on(start_scenario) for _ in range(3)])


async def test_expiry_edit_once_on_racing_replicas_postgres(
    fresh_postgres_url: str,
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    start_scenario: StartScenario,
) -> None:
    replicas = [await bot_on(start_scenario, fresh_postgres_url) for _ in range(3)]
    await race_expiry(fake_asana, fake_slack, replicas)


@pytest.mark.parametrize("value", ["6h", "21600", "360m"])
def test_stall_after_reads_seconds_or_a_unit(value: str) -> None:
    from bot.config import Settings

    assert Settings(STALL_AFTER=value).STALL_AFTER == 21600


# -- a replica that died around its stall note ----------------------------------------------


async def claimed_then_crashed(bot: Scenario) -> tuple[int, str]:
    """A watch whose stall note a dead replica claimed; (subscription id, card ts)."""
    card = await watch(bot)
    (sub,) = await bot.runtime.store.active_subscriptions(GID)
    bot.clock.advance(STALL + 1)
    every = timedelta(seconds=STALL)
    assert await FollowupStore(bot.runtime.store).claim_stall(sub.id, now=bot.clock(), every=every)
    return sub.id, card


async def test_a_stall_note_posted_but_not_recorded_is_found_in_its_thread(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    fake_asana.set_export(GID, "started")
    bot = await bot_on(start_scenario, NOTIFY_GRACE_SECONDS="60")
    sub_id, card = await claimed_then_crashed(bot)
    # Slack had accepted the dead replica's note:
    fake_slack.add_message(
        "C1",
        "stalled",
        bot=True,
        thread_ts=card,
        metadata={
            "event_type": "asana_export_stalled",
            "event_payload": {"gid": GID, "subscription_id": sub_id, "note": 1},
        },
    )
    assert await run(bot, after=30) == (0, 0), "within the grace: its poster may be at work"
    assert fake_slack.calls_to("conversations.replies") == []
    assert await run(bot, after=31) == (0, 0)
    assert fake_slack.calls_to("conversations.replies"), "the thread was read"
    row = await FollowupStore(bot.runtime.store).followup(sub_id)
    assert row["stall_notes"] == 1 and row["stall_noted_at"] == row["stall_claimed_at"]
    assert stall_notes(fake_slack) == [], "found in the thread, so not posted again"
    assert await run(bot, after=STALL) == (1, 0), "the next note comes a period later"
    assert [n["metadata"]["event_payload"]["note"] for n in stall_notes(fake_slack)] == [2]


async def test_a_stall_note_claimed_but_never_posted_is_posted_once_after_the_grace(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    fake_asana.set_export(GID, "started")
    bot = await bot_on(start_scenario, NOTIFY_GRACE_SECONDS="60")
    await claimed_then_crashed(bot)
    assert await run(bot, after=30) == (0, 0)
    assert await run(bot, after=31) == (1, 0)
    assert await run(bot, after=1) == (0, 0)
    (note,) = stall_notes(fake_slack)
    assert note["metadata"]["event_payload"]["note"] == 1


# -- what is said ---------------------------------------------------------------------------


def test_the_new_renderings_are_valid_block_kit_and_only_link_posts_count_as_carrying_one() -> None:
    made = {
        k: v
        for k, v in renderings().items()
        if k.split("/")[0] in ("stall_note", "link_expired", "audit")
    }
    assert len(made) > 300
    for key, rendered in made.items():
        assert validate_blocks(rendered["blocks"]) == [], key
        assert "X-Amz" not in json.dumps(rendered), key
    now = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    done = Export(gid="1205", state=ExportState.FINISHED, download_url=CANARY)
    with_link = render_finished_post(done, now=now, requester_user_id=None, link_valid_until=now)
    without = render_finished_post(
        done, now=now, requester_user_id=None, link_valid_until=now, include_link=False
    )
    assert carries_link(with_link) and not carries_link(without)
    assert not carries_link(Message("x", []))
