"""End to end: watching exports through the real bot process, with fast intervals.

Covers: card updates, one link post per channel, coalesced polling, unwatch, error/404/401
endings, Retry-After honoured across polls, restart by SIGKILL on SQLite and PostgreSQL, and
a download_url canary that must never reach the logs or the database.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.botproc import FAST_WATCH, SIGNING_SECRET, BotProcess
from tests.conftest import ASANA_TOKEN
from tests.fakes.asana import FakeAsana
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_signing import post_block_actions, post_slash_command

GID = "1200000000000555"
FAST = {
    **FAST_WATCH,
    "LINK_POLICY": "anywhere",  # these tests are about watching; tests/test_security.py: policy
}


@pytest.fixture
def watch_env(bot_env: dict[str, str]) -> dict[str, str]:
    return {**bot_env, **FAST}


@pytest.fixture
def bot(watch_env: dict[str, str], tmp_path: Path):
    process = BotProcess(tmp_path, watch_env).start()
    yield process
    process.stop()


def command(bot: BotProcess, slack: FakeSlack, text: str, channel: str = "C0001", **kw: Any):
    response = post_slash_command(
        bot.events_url,
        secret=SIGNING_SECRET,
        text=text,
        channel_id=channel,
        response_url=kw.pop("response_url", None) or slack.new_response_url(),
        **kw,
    )
    assert response.status == 200, response.body_text
    assert response.elapsed < 3.0
    return json.loads(response.body_text)


def posts(slack: FakeSlack, channel: str | None = None) -> list[dict[str, Any]]:
    return [
        c.body
        for c in slack.calls_to("chat.postMessage")
        if c.ok and (channel is None or c.body.get("channel") == channel)
    ]


def finished_posts(slack: FakeSlack, channel: str | None = None) -> list[dict[str, Any]]:
    return [
        p
        for p in posts(slack, channel)
        if (p.get("metadata") or {}).get("event_type") == "asana_export_finished"
    ]


def card_updates(slack: FakeSlack, channel: str) -> list[dict[str, Any]]:
    return [c.body for c in slack.calls_to("chat.update") if c.body.get("channel") == channel]


def text_of(body: dict[str, Any]) -> str:
    return str(body.get("text", "")) + json.dumps(body.get("blocks", []))


def test_pending_started_finished_updates_card_and_posts_link_once(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot: BotProcess
) -> None:
    fake_asana.set_export(GID, "pending", organization_name="Acme")
    fake_asana.script(GID, ["pending", "started", "finished"], advance="manual")
    answer = command(bot, fake_slack, GID, user_id="U0ALICE")
    assert answer["response_type"] == "ephemeral" and "Watching" in answer["text"]
    (card,) = posts(fake_slack, "C0001")
    assert "pending" in text_of(card)

    fake_asana.advance(GID)  # started
    fake_slack.wait_for(lambda: card_updates(fake_slack, "C0001"), timeout=10)
    assert "started" in text_of(card_updates(fake_slack, "C0001")[-1])

    fake_asana.advance(GID)  # finished
    fake_slack.wait_for(lambda: finished_posts(fake_slack, "C0001"), timeout=10)
    time.sleep(1.5)  # any duplicate would arrive within a few ticks
    (post,) = finished_posts(fake_slack, "C0001")
    assert "<@U0ALICE>" in post["text"]
    link = fake_asana.download_urls(GID)[-1]
    assert link in json.dumps(post["blocks"]), "the link minted by the finishing poll"
    assert link not in post["text"]
    assert post["metadata"]["event_payload"]["gid"] == GID
    updates = card_updates(fake_slack, "C0001")
    assert len(updates) == 2, "card edited once per state change"
    assert "finished" in text_of(updates[-1]) and link not in text_of(updates[-1])
    assert (
        "nothing" in text_of(command(bot, fake_slack, "list")).lower()
        or "no " in text_of(command(bot, fake_slack, "list")).lower()
    )
    assert "Traceback" not in bot.logs()


def test_three_channels_one_poll_per_interval_three_posts(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot: BotProcess
) -> None:
    fake_asana.set_export(GID, "started", organization_name="Shared")
    fake_asana.script(GID, ["started", "finished"], advance="manual")
    for channel in ("C1", "C2", "C3"):
        assert "Watching" in command(bot, fake_slack, GID, channel=channel)["text"]
    fake_asana.clear_requests()
    time.sleep(3.0)
    gets = [r for r in fake_asana.requests_for(GID) if r.method == "GET"]
    gaps = [b.at - a.at for a, b in itertools.pairwise(gets)]
    assert 2 <= len(gets) <= 7, len(gets)  # one per POLL interval (0.5 -> 1 s), not per channel
    assert min(gaps) >= 0.4, gaps  # never several requests for one poll
    fake_asana.advance(GID)
    fake_slack.wait_for(lambda: len(finished_posts(fake_slack)) == 3, timeout=10)
    time.sleep(1.0)
    assert sorted(p["channel"] for p in finished_posts(fake_slack)) == ["C1", "C2", "C3"]


def test_unwatch_stops_posts_to_that_channel_only(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot: BotProcess
) -> None:
    fake_asana.set_export(GID, "pending")
    fake_asana.script(GID, ["pending", "finished"], advance="manual")
    command(bot, fake_slack, GID, channel="CKEEP")
    command(bot, fake_slack, GID, channel="CDROP")
    answer = command(bot, fake_slack, f"unwatch {GID}", channel="CDROP")
    assert "Stopped watching" in answer["text"]
    assert "does not watch" in command(bot, fake_slack, f"unwatch {GID}", channel="CDROP")["text"]
    fake_asana.advance(GID)
    fake_slack.wait_for(lambda: finished_posts(fake_slack, "CKEEP"), timeout=10)
    time.sleep(1.0)
    assert finished_posts(fake_slack, "CDROP") == []


def test_list_and_list_all_and_already_watching(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot: BotProcess
) -> None:
    assert (
        "not watching" in text_of(command(bot, fake_slack, "list")).lower()
        or "no" in text_of(command(bot, fake_slack, "list")).lower()
    )
    fake_asana.set_export(GID, "pending", organization_name="Listed Org")
    fake_asana.set_export("77", "started", organization_name="Other Org")
    command(bot, fake_slack, GID, channel="CA", user_id="U0BOB")
    again = command(bot, fake_slack, f"watch {GID}", channel="CA")
    assert "already watches" in again["text"]
    fake_slack.add_channel("CB", members=["U0001"])  # `list all` names CB only to its members
    command(bot, fake_slack, "77", channel="CB")
    here = text_of(command(bot, fake_slack, "list", channel="CA"))
    assert "Listed Org" in here and "Other Org" not in here and "<@U0BOB>" in here
    everywhere = text_of(command(bot, fake_slack, "list all", channel="CA"))
    assert "Listed Org" in everywhere and "Other Org" in everywhere
    assert len(posts(fake_slack, "CA")) == 1, "asking again posts no second card"
    health = httpx.get(bot.ready_url).json()
    assert health["ready"] and health["watches"] == 2 and health["slack_paused"] is None


def test_not_in_channel_is_explained_and_nothing_is_watched(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot: BotProcess
) -> None:
    fake_slack.add_channel("CNOPE", is_member=False)
    fake_asana.set_export(GID, "pending")
    answer = command(bot, fake_slack, GID, channel="CNOPE")
    assert answer["response_type"] == "ephemeral"
    assert "/invite" in text_of(answer)
    assert "not watching" in text_of(command(bot, fake_slack, "list", channel="CNOPE")).lower() or (
        GID not in text_of(command(bot, fake_slack, "list", channel="CNOPE"))
    )


@pytest.mark.parametrize("ending", ["error", "404"])
def test_error_and_404_end_the_watch_with_one_post(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot: BotProcess, ending: str
) -> None:
    fake_asana.set_export(GID, "pending", organization_name="Doomed")
    command(bot, fake_slack, GID)
    if ending == "error":
        fake_asana.set_state(GID, "error")
        event = "asana_export_failed"
    else:
        fake_asana.fail(404, gid=GID, times=1000)
        event = "asana_export_gone"

    def endings() -> list[dict[str, Any]]:
        return [
            p for p in posts(fake_slack) if (p.get("metadata") or {}).get("event_type") == event
        ]

    fake_slack.wait_for(endings, timeout=10)
    fake_asana.clear_requests()
    time.sleep(1.5)
    assert len(endings()) == 1
    assert fake_asana.requests_for(GID) == [], "an ended watch is not polled"


def test_lost_access_pauses_once_and_resumes(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot: BotProcess
) -> None:
    fake_asana.set_export(GID, "pending")
    command(bot, fake_slack, GID)
    fake_asana.set_token("rotated")  # our token now gets 401
    fake_slack.wait_for(lambda: [p for p in posts(fake_slack) if "Paused" in p["text"]], timeout=10)
    time.sleep(2.5)  # several paused polls: still one announcement
    assert len([p for p in posts(fake_slack) if "Paused" in p["text"]]) == 1
    fake_asana.set_token(ASANA_TOKEN)
    fake_asana.set_state(GID, "finished")
    fake_slack.wait_for(lambda: finished_posts(fake_slack), timeout=10)


def test_retry_after_pauses_every_poll_on_the_token(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot: BotProcess
) -> None:
    fake_asana.set_export(GID, "pending")
    fake_asana.set_export("88", "pending")
    command(bot, fake_slack, GID)
    command(bot, fake_slack, "88")
    time.sleep(0.8)
    fake_asana.fail(429, retry_after=3, times=1)
    fake_slack.wait_for(lambda: [r for r in fake_asana.requests if r.status == 429], timeout=10)
    limited = next(r for r in fake_asana.requests if r.status == 429)
    time.sleep(5.0)
    # A poll launched in the same tick may still land just after the 429; nothing else may.
    later = [r for r in fake_asana.requests if r.at > limited.at + 0.2]
    assert later, "polling resumed"
    assert min(r.at for r in later) - limited.at >= 3.0, (
        "no request on the token within Retry-After"
    )
    assert {r.gid for r in later} == {GID, "88"}


def test_fresh_link_button_answers_the_clicker_privately(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot: BotProcess
) -> None:
    fake_asana.set_export(GID, "pending")
    command(bot, fake_slack, GID)
    fake_asana.set_state(GID, "finished")
    fake_slack.wait_for(lambda: finished_posts(fake_slack), timeout=10)
    (post,) = finished_posts(fake_slack)
    response_url = fake_slack.new_response_url()
    clicked = post_block_actions(
        bot.events_url,
        secret=SIGNING_SECRET,
        action_id="fresh_link",
        value=GID,
        response_url=response_url,
        message=fake_slack.wire_message(
            post["channel"], fake_slack.messages(post["channel"])[-1]["ts"]
        ),
    )
    assert clicked.status == 200 and clicked.elapsed < 3.0
    fake_slack.wait_for(lambda: fake_slack.responses(response_url), timeout=10)
    (reply,) = fake_slack.responses(response_url)
    assert reply.body["response_type"] == "ephemeral"
    newest = fake_asana.download_urls(GID)[-1]
    assert newest in json.dumps(reply.body["blocks"])
    assert newest not in json.dumps(post["blocks"]), "a new link, not the posted one"


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


def _restart_case(
    fake_asana: FakeAsana, fake_slack: FakeSlack, env: dict[str, str], tmp_path: Path
) -> float:
    fake_asana.set_export(GID, "pending", organization_name="Restart")
    first = BotProcess(tmp_path, env, name="first").start()
    command(first, fake_slack, GID, channel="CR1")
    command(first, fake_slack, GID, channel="CR2")
    time.sleep(0.7)
    first.kill()  # SIGKILL mid-watch
    fake_asana.set_state(GID, "finished")
    fake_asana.clear_requests()
    second = BotProcess(tmp_path, {**env, "PORT": ""}, name="second")
    try:
        second.start()
        started = second.started_at
        fake_slack.wait_for(lambda: fake_asana.requests_for(GID), timeout=10)
        first_poll = fake_asana.requests_for(GID)[0].at - started
        fake_slack.wait_for(lambda: len(finished_posts(fake_slack)) == 2, timeout=15)
        time.sleep(1.5)
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
    fake_asana.set_delay(1.0, gid=GID)  # a poll is likely in flight when SIGTERM lands
    time.sleep(0.8)
    assert bot.stop() == 0
    assert "Traceback" not in bot.logs()
    assert "shutting down" in bot.logs()


def test_leading_zeros_are_the_same_export(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot: BotProcess
) -> None:
    """`01234` and `1234` are one export: one watch, one request path, one card."""
    fake_asana.set_export("1234", "pending", organization_name="Zero Org")
    first = command(bot, fake_slack, "watch 01234", channel="CZ")
    assert "Watching" in first["text"] and "01234" not in text_of(first)
    again = command(bot, fake_slack, "watch 1234", channel="CZ")
    assert "already watches" in again["text"]
    assert "already watches" in command(bot, fake_slack, "`001234`", channel="CZ")["text"]
    assert len(posts(fake_slack, "CZ")) == 1
    assert {r.path.rsplit("/", 1)[-1] for r in fake_asana.requests} == {"1234"}
    health = httpx.get(bot.ready_url).json()
    assert health["watches"] == 1
    listed = text_of(command(bot, fake_slack, "list", channel="CZ"))
    assert "1234" in listed and "01234" not in listed
    gone = command(bot, fake_slack, "unwatch 0001234", channel="CZ")
    assert httpx.get(bot.ready_url).json()["watches"] == 0, gone


@pytest.mark.parametrize("text", ["١٢٣", "１２３", "watch １２３"])
def test_digits_of_other_scripts_are_not_a_number(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot: BotProcess, text: str
) -> None:
    answer = command(bot, fake_slack, text)
    assert answer["response_type"] == "ephemeral"
    assert "not a number" in answer["text"] and "too long" not in answer["text"]
    assert fake_asana.requests == []
