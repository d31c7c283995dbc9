"""Watching exports: card updates, one link post per channel, coalesced polling, unwatch,
error/404/401 endings, Retry-After honoured across polls, and leading zeros.

Most of it runs in process (`scenario`: the real runtime, Bolt app and watcher against the fakes,
ticked with an injected clock). The real process is kept for what needs one: a download_url canary
that must never reach the logs or the database over the whole HTTP path, restart after SIGKILL on
SQLite and PostgreSQL, and SIGTERM.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.testing import (
    FAST_WATCH,
    BotProcess,
    async_wait_until,
    command,
    event_posts,
    finished_posts,
    posts,
    text_of,
    wait_until,
)
from bot.testing.scenario import Scenario
from tests.conftest import ASANA_TOKEN, StartScenario

GID = "1200000000000555"
FAST = {
    **FAST_WATCH,
    "LINK_POLICY": "anywhere",  # these tests are about watching; tests/test_security.py: policy
}
#: Ticks (each a poll interval later, with a recovery pass) in which a duplicate would show.
SETTLE_TICKS = 5


@pytest.fixture
def watch_env(bot_env: dict[str, str]) -> dict[str, str]:
    return {**bot_env, **FAST}


@pytest.fixture
def bot(watch_env: dict[str, str], tmp_path: Path):
    process = BotProcess(tmp_path, watch_env).start()
    yield process
    process.stop()


@pytest.fixture
async def sbot(start_scenario: StartScenario) -> Scenario:
    """The bot in process, links posted anywhere."""
    return await start_scenario(LINK_POLICY="anywhere")


def card_updates(slack: FakeSlack, channel: str) -> list[dict[str, Any]]:
    return [c.body for c in slack.calls_to("chat.update") if c.body.get("channel") == channel]


# ------------------------------------------------------------------------------ in process


async def test_pending_started_finished_updates_card_and_posts_link_once(
    fake_asana: FakeAsana, fake_slack: FakeSlack, sbot: Scenario
) -> None:
    fake_asana.set_export(GID, "pending", organization_name="Acme")
    fake_asana.script(GID, ["pending", "started", "finished"], advance="manual")
    answer = await sbot.command(GID, user_id="U0ALICE")
    assert answer["response_type"] == "ephemeral" and "Watching" in answer["text"]
    (card,) = posts(fake_slack, "C0001")
    assert "pending" in text_of(card)

    fake_asana.advance(GID)  # started
    await sbot.run_until(lambda: card_updates(fake_slack, "C0001"))
    assert "started" in text_of(card_updates(fake_slack, "C0001")[-1])

    fake_asana.advance(GID)  # finished
    await sbot.run_until(lambda: finished_posts(fake_slack, "C0001"))
    await sbot.ticks(SETTLE_TICKS)  # any duplicate would come in the next ticks or recoveries
    (post,) = finished_posts(fake_slack, "C0001")
    assert "<@U0ALICE>" in post["text"]
    link = fake_asana.download_urls(GID)[-1]
    assert link in json.dumps(post["blocks"]), "the link minted by the finishing poll"
    assert link not in post["text"]
    assert post["metadata"]["event_payload"]["gid"] == GID
    updates = card_updates(fake_slack, "C0001")
    assert len(updates) == 2, "card edited once per state change"
    assert "finished" in text_of(updates[-1]) and link not in text_of(updates[-1])
    listed = text_of(await sbot.command("list")).lower()
    assert "nothing" in listed or "no " in listed
    assert sbot.tracebacks == []


async def test_three_channels_one_poll_per_interval_three_posts(
    fake_asana: FakeAsana, fake_slack: FakeSlack, sbot: Scenario
) -> None:
    fake_asana.set_export(GID, "started", organization_name="Shared")
    fake_asana.script(GID, ["started", "finished"], advance="manual")
    for channel in ("C1", "C2", "C3"):
        assert "Watching" in (await sbot.command(GID, channel=channel))["text"]
    fake_asana.clear_requests()
    assert await sbot.tick(0.1) == 0, "not due before POLL_INITIAL_SECONDS"
    assert fake_asana.requests_for(GID) == []
    for polls in range(1, 5):
        assert await sbot.tick(sbot.settings.POLL_MAX_SECONDS) == 1
        gets = [r for r in fake_asana.requests_for(GID) if r.method == "GET"]
        assert len(gets) == polls, "one request per poll interval, not one per channel"
    fake_asana.advance(GID)
    await sbot.run_until(lambda: len(finished_posts(fake_slack)) == 3)
    await sbot.ticks(SETTLE_TICKS)
    assert sorted(p["channel"] for p in finished_posts(fake_slack)) == ["C1", "C2", "C3"]


async def test_unwatch_stops_posts_to_that_channel_only(
    fake_asana: FakeAsana, fake_slack: FakeSlack, sbot: Scenario
) -> None:
    fake_asana.set_export(GID, "pending")
    fake_asana.script(GID, ["pending", "finished"], advance="manual")
    await sbot.command(GID, channel="CKEEP")
    await sbot.command(GID, channel="CDROP")
    answer = await sbot.command(f"unwatch {GID}", channel="CDROP")
    assert "Stopped watching" in answer["text"]
    assert "does not watch" in (await sbot.command(f"unwatch {GID}", channel="CDROP"))["text"]
    fake_asana.advance(GID)
    await sbot.run_until(lambda: finished_posts(fake_slack, "CKEEP"))
    await sbot.ticks(SETTLE_TICKS)
    assert finished_posts(fake_slack, "CDROP") == []


async def test_list_and_list_all_and_already_watching(
    fake_asana: FakeAsana, fake_slack: FakeSlack, sbot: Scenario
) -> None:
    empty = text_of(await sbot.command("list")).lower()
    assert "not watching" in empty or "no" in empty
    fake_asana.set_export(GID, "pending", organization_name="Listed Org")
    fake_asana.set_export("77", "started", organization_name="Other Org")
    await sbot.command(GID, channel="CA", user_id="U0BOB")
    again = await sbot.command(f"watch {GID}", channel="CA")
    assert "already watches" in again["text"]
    fake_slack.add_channel("CB", members=["U0001"])  # `list all` names CB only to its members
    await sbot.command("77", channel="CB")
    here = text_of(await sbot.command("list", channel="CA"))
    assert "Listed Org" in here and "Other Org" not in here and "<@U0BOB>" in here
    everywhere = text_of(await sbot.command("list all", channel="CA"))
    assert "Listed Org" in everywhere and "Other Org" in everywhere
    assert len(posts(fake_slack, "CA")) == 1, "asking again posts no second card"
    health = await sbot.health()
    assert health["watches"] == 2 and health["slack_paused"] is None


async def test_not_in_channel_is_explained_and_nothing_is_watched(
    fake_asana: FakeAsana, fake_slack: FakeSlack, sbot: Scenario
) -> None:
    fake_slack.add_channel("CNOPE", is_member=False)
    fake_asana.set_export(GID, "pending")
    answer = await sbot.command(GID, channel="CNOPE")
    assert answer["response_type"] == "ephemeral"
    assert "/invite" in text_of(answer)
    listed = text_of(await sbot.command("list", channel="CNOPE"))
    assert "not watching" in listed.lower() or GID not in listed
    assert (await sbot.health())["watches"] == 0


@pytest.mark.parametrize("ending", ["error", "404"])
async def test_error_and_404_end_the_watch_with_one_post(
    fake_asana: FakeAsana, fake_slack: FakeSlack, sbot: Scenario, ending: str
) -> None:
    fake_asana.set_export(GID, "pending", organization_name="Doomed")
    await sbot.command(GID)
    if ending == "error":
        fake_asana.set_state(GID, "error")
        event = "asana_export_failed"
    else:
        fake_asana.fail(404, gid=GID, times=1000)
        event = "asana_export_gone"

    await sbot.run_until(lambda: event_posts(fake_slack, event))
    fake_asana.clear_requests()
    await sbot.ticks(SETTLE_TICKS)
    assert len(event_posts(fake_slack, event)) == 1
    assert fake_asana.requests_for(GID) == [], "an ended watch is not polled"


async def test_lost_access_pauses_once_and_resumes(
    fake_asana: FakeAsana, fake_slack: FakeSlack, sbot: Scenario
) -> None:
    def paused() -> list[dict[str, Any]]:
        return [p for p in posts(fake_slack) if "Paused" in p["text"]]

    fake_asana.set_export(GID, "pending")
    await sbot.command(GID)
    fake_asana.set_token("rotated")  # our token now gets 401
    await sbot.run_until(paused)
    fake_asana.clear_requests()
    await sbot.ticks(SETTLE_TICKS, step=sbot.settings.PAUSED_RETRY_SECONDS)
    assert len(fake_asana.requests_for(GID)) >= 3, "paused polls go on"
    assert len(paused()) == 1, "several paused polls: still one announcement"
    fake_asana.set_token(ASANA_TOKEN)
    fake_asana.set_state(GID, "finished")
    await sbot.run_until(lambda: finished_posts(fake_slack))


async def test_retry_after_pauses_every_poll_on_the_token(
    fake_asana: FakeAsana, fake_slack: FakeSlack, sbot: Scenario
) -> None:
    """Retry-After is real time on the client's clock: this scenario waits its 3 s."""
    fake_asana.set_export(GID, "pending")
    fake_asana.set_export("88", "pending")
    await sbot.command(GID)
    await sbot.command("88")
    await sbot.tick(sbot.settings.POLL_MAX_SECONDS)
    fake_asana.fail(429, retry_after=3, times=1)
    await sbot.run_until(lambda: [r for r in fake_asana.requests if r.status == 429])
    limited = next(r for r in fake_asana.requests if r.status == 429)

    def resumed() -> set[str | None]:
        later = {r.gid for r in fake_asana.requests if r.at > limited.at + 0.2}
        return later if {GID, "88"} <= later else set()

    await sbot.run_until(resumed, step=0.5, timeout=15)
    # A poll launched in the same tick may still land just after the 429; nothing else may.
    later = [r for r in fake_asana.requests if r.at > limited.at + 0.2]
    assert min(r.at for r in later) - limited.at >= 3.0, (
        "no request on the token within Retry-After"
    )
    assert {r.gid for r in later} == {GID, "88"}


async def test_fresh_link_button_answers_the_clicker_privately(
    fake_asana: FakeAsana, fake_slack: FakeSlack, sbot: Scenario
) -> None:
    fake_asana.set_export(GID, "pending")
    await sbot.command(GID)
    fake_asana.set_state(GID, "finished")
    await sbot.run_until(lambda: finished_posts(fake_slack))
    (post,) = finished_posts(fake_slack)
    response_url = fake_slack.new_response_url()
    clicked = await sbot.click(
        action_id="fresh_link",
        value=GID,
        response_url=response_url,
        message=fake_slack.wire_message(
            post["channel"], fake_slack.messages(post["channel"])[-1]["ts"]
        ),
    )
    assert clicked.status == 200 and clicked.elapsed < 3.0
    await async_wait_until(lambda: fake_slack.responses(response_url), timeout=10)
    (reply,) = fake_slack.responses(response_url)
    assert reply.body["response_type"] == "ephemeral"
    newest = fake_asana.download_urls(GID)[-1]
    assert newest in json.dumps(reply.body["blocks"])
    assert newest not in json.dumps(post["blocks"]), "a new link, not the posted one"


async def test_leading_zeros_are_the_same_export(
    fake_asana: FakeAsana, fake_slack: FakeSlack, sbot: Scenario
) -> None:
    """`01234` and `1234` are one export: one watch, one request path, one card."""
    fake_asana.set_export("1234", "pending", organization_name="Zero Org")
    first = await sbot.command("watch 01234", channel="CZ")
    assert "Watching" in first["text"] and "01234" not in text_of(first)
    again = await sbot.command("watch 1234", channel="CZ")
    assert "already watches" in again["text"]
    assert "already watches" in (await sbot.command("`001234`", channel="CZ"))["text"]
    assert len(posts(fake_slack, "CZ")) == 1
    await sbot.ticks(2)
    assert {r.path.rsplit("/", 1)[-1] for r in fake_asana.requests} == {"1234"}
    assert (await sbot.health())["watches"] == 1
    listed = text_of(await sbot.command("list", channel="CZ"))
    assert "1234" in listed and "01234" not in listed
    gone = await sbot.command("unwatch 0001234", channel="CZ")
    assert (await sbot.health())["watches"] == 0, gone


@pytest.mark.parametrize("text", ["١٢٣", "１２３", "watch １２３"])
async def test_digits_of_other_scripts_are_not_a_number(
    fake_asana: FakeAsana, sbot: Scenario, text: str
) -> None:
    answer = await sbot.command(text)
    assert answer["response_type"] == "ephemeral"
    assert "not a number" in answer["text"] and "too long" not in answer["text"]
    assert fake_asana.requests == []


# ------------------------------------------------------------------------------ real process


def _dump_database(url: str) -> str:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = []
        for table in sa.inspect(conn).get_table_names():
            rows += [repr(tuple(r)) for r in conn.execute(sa.text(f'SELECT * FROM "{table}"'))]
    engine.dispose()
    return "\n".join(rows)


def test_canary_link_never_reaches_logs_or_database(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot: BotProcess, tmp_path: Path
) -> None:
    canary = "https://canary.example.test/export.zip?X-Amz-Credential=CANARYSECRET42"
    fake_asana.set_export(GID, "started", organization_name="Canary", download_url=canary)
    command(bot, fake_slack, GID)
    fake_asana.set_state(GID, "finished")
    fake_slack.wait_for(lambda: finished_posts(fake_slack), timeout=10)
    command(bot, fake_slack, GID)  # a finished lookup shows the link in the answer, too
    bot.stop()
    logs = bot.logs()
    assert "CANARYSECRET42" not in logs and ASANA_TOKEN not in logs
    assert fake_slack.bot_token not in logs
    dump = _dump_database(f"sqlite:///{tmp_path / 'bot.db'}")
    assert GID in dump, "the dump really holds the watch"
    assert "CANARYSECRET42" not in dump and "canary.example.test" not in dump


def _told_watches(url: str) -> int:
    """Watches whose notification is recorded: nothing can post for them again."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            query = "SELECT count(*) FROM subscriptions WHERE notified_ts IS NOT NULL"
            return int(conn.execute(sa.text(query)).scalar_one())
    finally:
        engine.dispose()


def _polled_and_released(url: str) -> bool:
    """The watched export was polled at least once and no replica holds its lease now."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            query = "SELECT poll_count, lease_owner FROM exports WHERE gid = :gid"
            row = conn.execute(sa.text(query), {"gid": GID}).one_or_none()
            return row is not None and row.poll_count >= 1 and row.lease_owner is None
    finally:
        engine.dispose()


def _restart_case(
    fake_asana: FakeAsana, fake_slack: FakeSlack, env: dict[str, str], tmp_path: Path
) -> float:
    fake_asana.set_export(GID, "pending", organization_name="Restart")
    first = BotProcess(tmp_path, env, name="first").start()
    command(first, fake_slack, GID, channel="CR1")
    command(first, fake_slack, GID, channel="CR2")
    # SIGKILL mid-watch, between polls: a poll done and its lease given back (killed inside a
    # poll, the lease would hold the export for LEASE_SECONDS, longer than the bound below).
    wait_until(lambda: _polled_and_released(env["DATABASE_URL"]), 10, "a poll recorded")
    first.kill()
    fake_asana.set_state(GID, "finished")
    fake_asana.clear_requests()
    second = BotProcess(tmp_path, {**env, "PORT": ""}, name="second")
    try:
        second.start()
        started = second.started_at
        fake_slack.wait_for(lambda: fake_asana.requests_for(GID), timeout=10)
        first_poll = fake_asana.requests_for(GID)[0].at - started
        fake_slack.wait_for(lambda: len(finished_posts(fake_slack)) == 2, timeout=15)
        wait_until(lambda: _told_watches(env["DATABASE_URL"]) == 2, 10, "both posts recorded")
        assert sorted(p["channel"] for p in finished_posts(fake_slack)) == ["CR1", "CR2"]
        return first_poll
    finally:
        second.stop()


def test_restart_after_sigkill_loses_nothing_sqlite(
    fake_asana: FakeAsana, fake_slack: FakeSlack, watch_env: dict[str, str], tmp_path: Path
) -> None:
    first_poll = _restart_case(fake_asana, fake_slack, watch_env, tmp_path)
    print(f"sqlite: first poll {first_poll:.2f}s after exec of the restarted process")
    assert first_poll < 10


def test_restart_after_sigkill_loses_nothing_postgres(
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    watch_env: dict[str, str],
    tmp_path: Path,
    fresh_postgres_url: str,
) -> None:
    env = {**watch_env, "DATABASE_URL": fresh_postgres_url}
    first_poll = _restart_case(fake_asana, fake_slack, env, tmp_path)
    print(f"postgres: first poll {first_poll:.2f}s after exec of the restarted process")
    assert first_poll < 10


def test_sigterm_shuts_down_cleanly(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot: BotProcess
) -> None:
    fake_asana.set_export(GID, "pending")
    command(bot, fake_slack, GID)
    fake_asana.set_delay(1.0, gid=GID)
    fake_asana.clear_requests()
    wait_until(lambda: fake_asana.requests_for(GID), 10, "a poll in flight when SIGTERM lands")
    assert bot.stop() == 0
    assert "Traceback" not in bot.logs()
    assert "shutting down" in bot.logs()
