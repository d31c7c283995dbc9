"""Recurring exports: `schedule`, `schedules [all]`, `unschedule` (issue 11, item 3).

In process (`scenario`: the real runtime and Bolt app against the fake Asana and fake Slack over
real HTTP, the clock injected): a schedule is stored and answered with its next three
occurrences in its zone and in UTC; a bad spec gets the usage with examples; only admins may
schedule; the lists follow `list all`'s privacy rule; only the creator or an admin may remove one.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.testing import async_wait_until, text_of
from bot.testing.scenario import Scenario
from tests.conftest import StartScenario

ORG = "4200000000000042"
SUNDAY = datetime(2030, 1, 6, 8, 0, tzinfo=UTC)
ADMIN = "U0ADMIN"
OTHER_ADMIN = "U0ADMIN2"
SETTINGS = {
    "LINK_POLICY": "anywhere",
    "ASANA_ORGANIZATION_GID": ORG,
    "ADMIN_USERS": f"{ADMIN},{OTHER_ADMIN}",
}


@pytest.fixture
async def sbot(start_scenario: StartScenario, fake_asana: FakeAsana) -> Scenario:
    fake_asana.set_organization(ORG, "Acme")
    return await start_scenario(**SETTINGS)


async def test_schedule_answers_with_the_next_three_occurrences_in_its_zone_and_utc(
    fake_asana: FakeAsana, sbot: Scenario
) -> None:
    sbot.clock.advance((SUNDAY - sbot.clock()).total_seconds())
    answer = await sbot.command('schedule cron "0 2 * * 1" tz Europe/Berlin', user_id=ADMIN)
    shown = text_of(answer)
    assert answer["response_type"] == "in_channel"
    assert "Schedule #1" in shown and f"`{ORG}`" in shown and "Europe/Berlin" in shown
    for local, utc in (
        ("Mon 2030-01-07 02:00 CET", "2030-01-07 01:00 UTC"),
        ("Mon 2030-01-14 02:00 CET", "2030-01-14 01:00 UTC"),
        ("Mon 2030-01-21 02:00 CET", "2030-01-21 01:00 UTC"),
    ):
        assert f"{local} = {utc}" in shown, shown
    (row,) = await sbot.runtime.store.list_schedules("T0001", "C0001")
    assert (row.trigger_text, row.timezone, row.organization_gid, row.created_by) == (
        'cron "0 2 * * 1"',
        "Europe/Berlin",
        ORG,
        ADMIN,
    )
    assert [r for r in fake_asana.requests if r.method == "POST"] == [], "nothing fires yet"
    assert sbot.tracebacks == []


async def test_the_default_zone_is_schedule_timezone_and_the_org_can_be_named(
    start_scenario: StartScenario,
) -> None:
    bot = await start_scenario(**SETTINGS, SCHEDULE_TIMEZONE="America/New_York")
    answer = await bot.command("schedule daily 03:30 77", user_id=ADMIN)
    assert "America/New_York" in text_of(answer) and "`77`" in text_of(answer)
    (row,) = await bot.runtime.store.list_schedules("T0001")
    assert (row.timezone, row.organization_gid) == ("America/New_York", "77")


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("", "When should the export run?"),
        ("hourly 03:00", "start with daily, weekly, monthly or cron"),
        ("weekly funday 02:00", "is not a day of the week"),
        ("daily 03:00 tz Mars/Olympus", "is not a time zone"),
        ('cron "0 2 * *"', "5 fields"),
        ("daily 03:00 <!channel>", "&lt;!channel&gt;"),
    ],
)
async def test_a_bad_spec_gets_the_usage_with_examples(
    sbot: Scenario, spec: str, says: str
) -> None:
    answer = await sbot.command(f"schedule {spec}", user_id=ADMIN)
    shown = text_of(answer)
    assert answer["response_type"] == "ephemeral"
    assert says in shown, shown
    assert "weekly mon 02:00" in shown and "<!channel>" not in shown
    assert await sbot.runtime.store.list_schedules("T0001") == []
    assert sbot.tracebacks == []


async def test_only_admins_may_schedule(fake_slack: FakeSlack, sbot: Scenario) -> None:
    answer = await sbot.command("schedule daily 03:30", user_id="U0OTHER")
    assert "for admins only" in answer["text"] and f"<@{ADMIN}>" in answer["text"]
    assert await sbot.runtime.store.list_schedules("T0001") == []


async def test_schedules_and_schedules_all_follow_the_privacy_rule(
    fake_slack: FakeSlack, sbot: Scenario
) -> None:
    fake_slack.add_channel("CA", members=["U0001"])
    fake_slack.add_channel("CB", members=["U0001"])
    fake_slack.add_channel("CSECRET", is_private=True)
    await sbot.command("schedule weekly mon 02:00", channel="CA", user_id=ADMIN)
    await sbot.command("schedule daily 04:00 tz Asia/Tokyo", channel="CB", user_id=ADMIN)
    await sbot.command("schedule monthly 1 05:00", channel="CSECRET", user_id=ADMIN)
    here = text_of(await sbot.command("schedules", channel="CA", user_id="U0001"))
    assert "#1" in here and "weekly mon 02:00" in here and "#2" not in here
    assert "next 2" in here and f"<@{ADMIN}>" in here
    everywhere = text_of(await sbot.command("schedules all", channel="CA", user_id="U0001"))
    assert "#1" in everywhere and "#2" in everywhere and "Asia/Tokyo" in everywhere
    assert "#3" not in everywhere and "1 more schedule is not shown" in everywhere
    empty = text_of(await sbot.command("schedules", channel="C0001", user_id="U0001"))
    assert "No exports are scheduled in this channel" in empty


async def test_unschedule_is_for_its_creator_or_an_admin(
    fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    # No ADMIN_USERS: the workspace's admins (users.info) may schedule and remove.
    bot = await start_scenario(LINK_POLICY="anywhere", ASANA_ORGANIZATION_GID=ORG)
    fake_slack.set_user("U0BOSS", is_admin=True)
    fake_slack.set_user("U0BOSS2", is_admin=True)
    await bot.command("schedule daily 03:30", user_id="U0BOSS")
    await bot.command("schedule daily 04:30", user_id="U0BOSS")
    refused = await bot.command("unschedule 1", user_id="U0MEMBER")
    assert "Only the person who created schedule #1, or an admin" in refused["text"]
    assert "removed" in (await bot.command("unschedule 1", user_id="U0BOSS"))["text"]
    assert "no schedule #1" in (await bot.command("unschedule 1", user_id="U0BOSS"))["text"]
    # The creator may remove their own even if they are no longer an admin.
    fake_slack.set_user("U0BOSS", is_admin=False)
    assert "removed" in (await bot.command("unschedule #2", user_id="U0BOSS"))["text"]
    assert "no schedule #99" in (await bot.command("unschedule 99", user_id="U0BOSS2"))["text"]
    assert await bot.runtime.store.list_schedules("T0001") == []
    ended = await bot.runtime.store.schedule(1)
    assert ended is not None and ended.end_reason == "removed by U0BOSS"
    assert bot.tracebacks == []


async def test_a_slow_slack_still_gets_every_schedule_command_an_ack_in_time(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    """The admin rule asks Slack (users.info) when ADMIN_USERS is empty: however slow Slack is,
    Slack's 3 seconds hold, and the answer follows through the command's response_url."""
    fake_asana.set_organization(ORG, "Acme")
    bot = await start_scenario(LINK_POLICY="anywhere", ASANA_ORGANIZATION_GID=ORG)
    fake_slack.set_user("U0BOSS", is_admin=True)
    fake_slack.set_user("U0BOSS2", is_owner=True)
    fake_slack.set_delay("users.info", 3.5)
    # The second admin did not create #1, so removing it asks Slack too.
    for text, user in (("schedule daily 03:30", "U0BOSS"), ("unschedule 1", "U0BOSS2")):
        response_url = fake_slack.new_response_url()
        response = await bot.slash(text, user_id=user, response_url=response_url)
        assert response.status == 200 and response.elapsed < 3.0, (text, response.elapsed)
        await async_wait_until(lambda u=response_url: fake_slack.responses(u), timeout=15)
        (late,) = fake_slack.responses(response_url)
        assert "Schedule #1" in text_of(late.body), (text, late.body)
    assert bot.tracebacks == []
