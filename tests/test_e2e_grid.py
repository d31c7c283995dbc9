"""Enterprise Grid: the bot installed org-wide, used from two workspaces of one org.

The fake Slack plays an org-wide install: auth.test answers as the org (team_id E..., and
`is_enterprise_install`), auth.teams.list names the two granted workspaces, and every payload
carries the workspace it comes from next to the org's `enterprise_id`, as Slack sends them
(clicks with `team: null`, the clicker's workspace in `user.team_id`). The scenarios run the
real runtime and Bolt app in process over real HTTP to the fakes; Socket Mode runs the real
process.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.testing import (
    FAST_WATCH,
    BotProcess,
    async_wait_until,
    bot_environment,
    finished_posts,
    posts,
    text_of,
    wait_until,
)
from bot.testing.scenario import Scenario
from tests.conftest import StartScenario

ORG_ID = "E0GRID"
ALPHA, BETA = "T0ALPHA", "T0BETA"
ALICE, BOB = "W0ALICE", "W0BOB"  # members of alpha and of beta
GUEST_TEAM = "T0PARTNER"  # a workspace of another organization (Slack Connect)
GID_A, GID_B, GID_S = "1200000000000001", "1200000000000002", "1200000000000003"
CANARY = "https://canary.example.test/export.zip?X-Amz-Signature=GRIDCANARY77"


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    """An org-wide install on the Grid org E0GRID, granted workspaces alpha and beta."""
    with FakeSlack(
        team_id=ALPHA,
        team_domain="alpha",
        team_name="Alpha",
        enterprise_id=ORG_ID,
        enterprise_name="Grid Org",
        org_wide=True,
    ) as fake:
        fake.add_workspace(BETA, domain="beta", name="Beta")
        fake.set_user(ALICE, team_id=ALPHA)
        fake.set_user(BOB, team_id=BETA)
        fake.add_channel("CALPHA", team_id=ALPHA, members=[ALICE])
        fake.add_channel("CBETA", team_id=BETA, members=[BOB])
        fake.add_channel("GALPHA", team_id=ALPHA, is_private=True, members=[ALICE, BOB])
        fake.add_channel("GBETA", team_id=BETA, is_private=True, members=[ALICE, BOB])
        fake.add_channel("CBOTH", team_id=ALPHA, shared_with=[BETA], members=[ALICE, BOB])
        yield fake


def listed(answer: dict[str, Any]) -> str:
    return answer["text"] + json.dumps(answer.get("blocks", []))


async def test_each_workspace_watches_lists_and_unwatches_its_own(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    for gid in (GID_A, GID_B):
        fake_asana.set_export(gid, "started")
    bot = await start_scenario(LINK_POLICY="anywhere")

    # Both workspaces watch; beta watches alpha's export too, in its own channel.
    assert "Watching" in (await bot.command(GID_A, "CALPHA", user_id=ALICE))["text"]
    assert "Watching" in (await bot.command(GID_B, "CBETA", user_id=BOB))["text"]
    assert "Watching" in (await bot.command(GID_A, "CBETA", user_id=BOB))["text"]
    calls = [c.body for c in fake_slack.calls_to("chat.postMessage")]
    assert {c["channel"] for c in calls} == {"CALPHA", "CBETA"}

    # `list all` shows each workspace its own watches only; `list` the channel's.
    alpha_all = listed(await bot.command("list all", "CALPHA", user_id=ALICE))
    assert GID_A in alpha_all and GID_B not in alpha_all and "CBETA" not in alpha_all
    beta_all = listed(await bot.command("list all", "CBETA", user_id=BOB))
    assert GID_A in beta_all and GID_B in beta_all and "CALPHA" not in beta_all
    assert "1 export watched" in (await bot.command("list", "CALPHA", user_id=ALICE))["text"]

    # Alpha stops watching: beta's watch of the same export stands and gets the link.
    assert "Stopped" in (await bot.command(f"unwatch {GID_A}", "CALPHA", user_id=ALICE))["text"]
    fake_asana.set_export(GID_A, "finished", download_url=CANARY)
    await bot.run_until(lambda: finished_posts(fake_slack, "CBETA"))
    await bot.ticks(2)
    assert finished_posts(fake_slack, "CALPHA") == []
    (done,) = finished_posts(fake_slack, "CBETA")
    assert CANARY in json.dumps(done)
    assert GID_A not in listed(await bot.command("list", "CALPHA", user_id=ALICE))
    assert bot.tracebacks == []


async def test_a_channel_shared_by_two_workspaces_is_watched_once(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    """One conversation id in both workspaces: one watch, one card, one finished post."""
    fake_asana.set_export(GID_S, "started")
    bot = await start_scenario(LINK_POLICY="anywhere")
    assert "Watching" in (await bot.command(GID_S, "CBOTH", user_id=ALICE))["text"]
    again = await bot.command(GID_S, "CBOTH", user_id=BOB)  # from beta's side of the channel
    assert "already watches" in again["text"]
    assert len(posts(fake_slack, "CBOTH")) == 1
    # The channel's list is the same from both sides; the watch is alpha's in `list all`.
    assert GID_S in listed(await bot.command("list", "CBOTH", user_id=BOB))
    assert GID_S in listed(await bot.command("list all", "CALPHA", user_id=ALICE))
    assert GID_S not in listed(await bot.command("list all", "CBETA", user_id=BOB))

    fake_asana.set_state(GID_S, "finished")
    await bot.run_until(lambda: finished_posts(fake_slack, "CBOTH"))
    await bot.ticks(3)
    assert len(finished_posts(fake_slack, "CBOTH")) == 1
    assert bot.tracebacks == []


async def test_both_sides_of_a_shared_channel_at_once_on_two_replicas(
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    start_scenario: StartScenario,
    fresh_postgres_url: str,
) -> None:
    """Both workspaces ask in the same instant, each through its own replica: one watch."""
    fake_asana.set_export(GID_S, "started")
    one = await start_scenario(fresh_postgres_url, LINK_POLICY="anywhere")
    two = await start_scenario(fresh_postgres_url, LINK_POLICY="anywhere")
    for _ in range(5):
        answers = await asyncio.gather(
            one.command(GID_S, "CBOTH", user_id=ALICE), two.command(GID_S, "CBOTH", user_id=BOB)
        )
        assert sorted("already" in a["text"] for a in answers) == [False, True], answers
        assert len(posts(fake_slack, "CBOTH")) == 1
        assert "Stopped" in (await one.command(f"unwatch {GID_S}", "CBOTH", user_id=BOB))["text"]
        fake_slack.clear()
    assert one.tracebacks == [] and two.tracebacks == []


async def click_fresh_link(
    bot: Scenario, slack: FakeSlack, *, channel: str, user: str, **fields: Any
) -> dict[str, Any]:
    """Press "Get a fresh link"; the bot's (only, ephemeral) answer on the response_url."""
    response_url = slack.new_response_url()
    response = await bot.click(
        action_id="fresh_link",
        value=GID_A,
        user_id=user,
        channel_id=channel,
        response_url=response_url,
        **fields,
    )
    assert response.status == 200 and response.elapsed < 3.0, response.body_text
    await async_wait_until(lambda: slack.responses(response_url), timeout=10)
    (reply,) = slack.responses(response_url)
    assert reply.body.get("response_type") == "ephemeral", reply.body
    return dict(reply.body)


async def test_link_policy_counts_every_workspace_of_the_org_as_ours(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    fake_asana.set_export(GID_A, "finished", download_url=CANARY)
    bot = await start_scenario(LINK_POLICY="private")

    def got_link(reply: dict[str, Any]) -> bool:
        return "GRIDCANARY77" in json.dumps(reply)

    # Members of both workspaces of the org, in a private channel of alpha: the link.
    assert got_link(await click_fresh_link(bot, fake_slack, channel="GALPHA", user=ALICE))
    assert got_link(await click_fresh_link(bot, fake_slack, channel="GALPHA", user=BOB))
    # A guest of another organization, whatever its ids look like: never.
    for team in (GUEST_TEAM, "E0OTHERORG"):
        reply = await click_fresh_link(
            bot, fake_slack, channel="GALPHA", user="U0GUEST", user_team_id=team
        )
        assert not got_link(reply), team
        assert "members of the organization that installed" in reply["text"]
    # A workspace of the org that was not granted the app is not known to be ours: refused.
    reply = await click_fresh_link(
        bot, fake_slack, channel="GALPHA", user="W0CAROL", user_team_id="T0GAMMA"
    )
    assert not got_link(reply)
    # The org's workspaces are asked once, not per click.
    assert len(fake_slack.calls_to("auth.teams.list")) == 1
    assert "GRIDCANARY77" not in bot.logs()
    assert bot.tracebacks == []


async def test_watch_instead_from_another_workspace_watches_there(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    """A click of an org-wide install may carry `team: null`: the watch is still beta's."""
    fake_asana.set_export(GID_B, "started")
    bot = await start_scenario(LINK_POLICY="anywhere")
    response_url = fake_slack.new_response_url()
    response = await bot.click(
        action_id="watch_instead",
        value=GID_B,
        user_id=BOB,
        channel_id="CBETA",
        response_url=response_url,
    )
    assert response.status == 200
    await async_wait_until(lambda: fake_slack.responses(response_url), timeout=10)
    assert "Watching" in fake_slack.responses(response_url)[0].body["text"]
    assert GID_B in listed(await bot.command("list all", "CBETA", user_id=BOB))
    assert GID_B not in listed(await bot.command("list all", "CALPHA", user_id=ALICE))


async def test_admin_rule_holds_per_workspace(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    """With ADMIN_USERS empty, a workspace admin may schedule in their workspace only; an
    admin of the whole org anywhere in it. Schedules belong to their workspace."""
    fake_slack.set_user(ALICE, team_id=ALPHA, is_admin=True)
    fake_slack.set_user("W0ORGADMIN", team_id=ALPHA, is_org_admin=True)
    bot = await start_scenario(ASANA_ORGANIZATION_GID="4200000000000042")

    made = await bot.command("schedule daily 03:30", "CALPHA", user_id=ALICE)
    assert "Schedule #1" in made["text"], made
    elsewhere = await bot.command("schedule daily 03:30", "CBETA", user_id=ALICE, team_id=BETA)
    assert "for admins only" in elsewhere["text"], elsewhere
    assert (
        "for admins only"
        in (await bot.command("schedule daily 04:00", "CBETA", user_id=BOB))["text"]
    )
    org_admin = await bot.command("schedule daily 05:00", "CBETA", user_id="W0ORGADMIN")
    assert "Schedule #2" in org_admin["text"], org_admin

    alpha = listed(await bot.command("schedules all", "CALPHA", user_id=ALICE))
    assert "#1" in alpha and "#2" not in alpha
    gone = await bot.command("unschedule 1", "CBETA", user_id="W0ORGADMIN")
    assert "no schedule #1 in this workspace" in gone["text"]
    assert "removed" in (await bot.command("unschedule 1", "CALPHA", user_id=ALICE))["text"]
    assert bot.tracebacks == []


def test_socket_mode_org_wide_install(
    fake_asana: FakeAsana, fake_slack: FakeSlack, tmp_path: Path
) -> None:
    """The real process over Socket Mode: envelopes from both workspaces of the org."""
    fake_asana.set_export(GID_A, "started")
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    env = bot_environment(fake_asana, fake_slack, url, socket_mode=True, LINK_POLICY="private")
    bot = BotProcess(tmp_path, {**env, **FAST_WATCH}).start()
    try:
        fake_slack.wait_for_socket_connection(timeout=10)
        answer = fake_slack.send_slash_command(text=GID_A, channel_id="GBETA", user_id=BOB)
        assert "Watching" in answer["text"], answer
        (envelope,) = [a.envelope for a in fake_slack.socket_acks if a.type == "slash_commands"]
        assert envelope["payload"]["team_id"] == BETA
        assert envelope["payload"]["enterprise_id"] == ORG_ID
        assert envelope["payload"]["is_enterprise_install"] == "true"

        fake_asana.set_export(GID_A, "finished", download_url=CANARY)
        wait_until(lambda: finished_posts(fake_slack, "GBETA"), 20, "the finished post")
        (done,) = finished_posts(fake_slack, "GBETA")
        assert "GRIDCANARY77" in text_of(done)  # private to the org: the link is posted

        response_url = fake_slack.new_response_url()
        fake_slack.send_interactive(
            fake_slack.block_actions_payload(
                action_id="fresh_link",
                value=GID_A,
                user_id=ALICE,
                channel_id="GBETA",
                response_url=response_url,
            )
        )
        wait_until(lambda: fake_slack.responses(response_url), 10, "the fresh link")
        assert "GRIDCANARY77" in json.dumps(fake_slack.responses(response_url)[0].body)
    finally:
        bot.stop()
    assert "GRIDCANARY77" not in bot.logs()
