"""The audit trail (issue 13, item 4): a line in the card's thread for each action and one
structured log event, in process against the fakes over real HTTP.

Lines go to the thread of every card of the export (active watches, and watches told it
finished); a schedule has no card yet, so its line goes to its channel. A failure to post a line
never breaks the command.
"""

from __future__ import annotations

import copy
import json
import logging

from bot import audit
from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.logging_setup import JsonFormatter, RedactFilter
from bot.messages import FRESH_LINK_ACTION, AuditAction, AuditEvent, render_audit_line
from bot.testing import event_posts, finished_posts, posts
from bot.testing.scenario import Scenario
from tests.conftest import StartScenario

GID = "1200000000001401"
ORG = "4200000000000042"
ADMIN = "U0ADMIN"


def audit_lines(slack: FakeSlack, channel: str | None = None) -> list[dict]:
    return event_posts(slack, audit.AUDIT_EVENT_TYPE, channel)


def card_ts(slack: FakeSlack, channel: str) -> str:
    """The ts of the first post the bot made in `channel` (the watch's card)."""
    (card, *_) = [
        c for c in slack.calls_to("chat.postMessage") if c.ok and c.body["channel"] == channel
    ]
    return card.response["ts"]


def audit_records(bot: Scenario, action: AuditAction) -> list[logging.LogRecord]:
    return [
        r for r in bot.records if (getattr(r, "fields", None) or {}).get("audit") == action.value
    ]


def as_json(record: logging.LogRecord) -> dict:
    """The line as LOG_FORMAT=json writes it."""
    shown = copy.copy(record)
    assert RedactFilter().filter(shown)
    return json.loads(JsonFormatter().format(shown))


async def test_watch_and_unwatch_are_audited_in_every_cards_thread_and_logged(
    fake_asana: FakeAsana, fake_slack: FakeSlack, scenario: Scenario
) -> None:
    fake_asana.set_export(GID, "started")
    await scenario.command(GID, channel="C0A1", user_id="U0AAA")
    await scenario.settle()
    (line,) = audit_lines(fake_slack)
    assert line["channel"] == "C0A1" and line["thread_ts"] == card_ts(fake_slack, "C0A1")
    assert "<@U0AAA> started watching this export in <#C0A1>" in line["text"]
    (record,) = audit_records(scenario, AuditAction.WATCH_STARTED)
    logged = as_json(record)
    assert logged["audit"] == "watch_started" and logged["gid"] == GID
    assert logged["user"] == "U0AAA" and logged["channel"] == "C0A1"

    await scenario.command(GID, channel="C0A2", user_id="U0BBB")
    await scenario.settle()
    second = [p for p in audit_lines(fake_slack) if "U0BBB" in p["text"]]
    assert sorted((p["channel"], p["thread_ts"]) for p in second) == [
        ("C0A1", card_ts(fake_slack, "C0A1")),
        ("C0A2", card_ts(fake_slack, "C0A2")),
    ], "every card of the export hears it"

    answer = await scenario.command(f"unwatch {GID}", channel="C0A2", user_id="U0BBB")
    assert "Stopped watching" in answer["text"]
    await scenario.settle()
    stopped = [p for p in audit_lines(fake_slack) if "stopped watching" in p["text"]]
    assert sorted(p["channel"] for p in stopped) == ["C0A1", "C0A2"], "the ended card's thread too"
    assert "<@U0BBB> stopped watching this export in <#C0A2>" in stopped[0]["text"]
    assert audit_records(scenario, AuditAction.WATCH_STOPPED)
    assert len(posts(fake_slack, "C0A1")) == 1, "audit lines are thread replies, not posts"


async def test_new_is_audited_as_the_export_created_by_whom(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    fake_asana.set_organization(ORG, "Acme")
    bot = await start_scenario(ASANA_ORGANIZATION_GID=ORG, ADMIN_USERS=ADMIN)
    answer = await bot.command("new", channel="C0A1", user_id=ADMIN)
    assert "Watching" in answer["text"], answer
    await bot.settle()
    (line,) = audit_lines(fake_slack)
    assert f"<@{ADMIN}> started this export of organization `{ORG}` in <#C0A1>" in line["text"]
    assert line["thread_ts"] == card_ts(fake_slack, "C0A1")
    (record,) = audit_records(bot, AuditAction.EXPORT_CREATED)
    assert record.fields["gid"] == fake_asana.export_gids()[0]


async def test_a_schedule_is_audited_in_its_channel(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    bot = await start_scenario(ASANA_ORGANIZATION_GID=ORG, ADMIN_USERS=ADMIN)
    answer = await bot.command(
        "schedule daily 03:30 tz Europe/Berlin", channel="C0A1", user_id=ADMIN
    )
    assert answer["response_type"] == "in_channel", answer
    await bot.settle()
    (line,) = audit_lines(fake_slack, "C0A1")
    assert f"<@{ADMIN}> created the schedule `#1: daily 03:30 (Europe/Berlin)" in line["text"]
    assert "thread_ts" not in line
    assert audit_records(bot, AuditAction.SCHEDULE_CREATED)


async def test_a_fresh_link_is_audited_in_the_finished_cards_thread(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    bot = await start_scenario(LINK_POLICY="anywhere")
    fake_asana.set_export(GID, "started")
    await bot.command(GID, channel="C0A1")
    fake_asana.set_state(GID, "finished")
    await bot.run_until(lambda: finished_posts(fake_slack))
    await bot.settle()
    response = await bot.click(
        action_id=FRESH_LINK_ACTION, value=GID, channel_id="C0A1", user_id="U0CCC"
    )
    assert response.status == 200
    await bot.settle()
    (line,) = [p for p in audit_lines(fake_slack) if "fresh download link" in p["text"]]
    assert "<@U0CCC> got a fresh download link in <#C0A1>" in line["text"]
    assert line["thread_ts"] == card_ts(fake_slack, "C0A1")
    assert "X-Amz" not in json.dumps(line) and "download_url" not in bot.logs()
    assert audit_records(bot, AuditAction.FRESH_LINK)


async def test_archived_is_audited_with_the_location_escaped(
    fake_asana: FakeAsana, fake_slack: FakeSlack, scenario: Scenario
) -> None:
    fake_asana.set_export(GID, "started")
    await scenario.command(GID, channel="C0A1")
    await scenario.settle()
    posted = await audit.archived(
        scenario.runtime, GID, "s3://bucket/<!channel>/export.json?X-Amz-Signature=secret"
    )
    assert posted == 1
    (line,) = [p for p in audit_lines(fake_slack) if "archived" in p["text"]]
    assert "<!channel>" not in line["text"] and "&lt;!channel&gt;" in line["text"]
    assert "This export was archived to `s3://bucket/" in line["text"]
    assert "secret" not in json.dumps(line) and "secret" not in scenario.logs()
    (record,) = audit_records(scenario, AuditAction.ARCHIVED)
    assert as_json(record)["detail"] == "s3://bucket/<!channel>/export.json"


async def test_a_failed_audit_line_never_breaks_the_command(
    fake_asana: FakeAsana, fake_slack: FakeSlack, scenario: Scenario
) -> None:
    fake_asana.set_export(GID, "started")
    await scenario.command(GID, channel="C0A1")
    await scenario.settle()
    fake_slack.fail("chat.postMessage", "fatal_error", times=None)
    answer = await scenario.command(f"unwatch {GID}", channel="C0A1")
    assert "Stopped watching" in answer["text"]
    await scenario.settle()
    assert scenario.tracebacks == []
    assert await audit.archived(scenario.runtime, GID, "file:///archive/x.json") == 0


def test_the_audit_line_mentions_users_and_escapes_what_it_quotes() -> None:
    from datetime import UTC, datetime

    event = AuditEvent(
        AuditAction.WATCH_STOPPED,
        GID,
        datetime(2026, 11, 29, 10, 0, tzinfo=UTC),
        user_id="U0AAA",
        channel_id="<!here>",
        via="button <b>",
    )
    line = render_audit_line(event)
    assert line.text.startswith(":memo: <@U0AAA> stopped watching this export (button &lt;b&gt;).")
    assert "<!here>" not in line.text and "2026-11-29 10:00 UTC" in line.text
    forged = AuditEvent(AuditAction.WATCH_STARTED, GID, event.at, user_id="<!channel>")
    assert "Someone started watching" in render_audit_line(forged).text
