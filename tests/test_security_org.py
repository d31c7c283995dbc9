"""Links stay inside the organization: Slack Connect clicks, the privacy cache, `list all`.

The scenarios run the bot in process against the fake Slack and fake Asana; the one about
start-up (auth.test failing) runs the real process. The fake Slack's
clicks carry `user.team_id` (the clicker's home: another workspace's T... for a Slack Connect
guest, an Enterprise org's E... for a member of an Enterprise org) next to `team.id` (the
workspace the message lives in), as Slack sends them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.demo.signing import post_block_actions
from bot.testing import SIGNING_SECRET, BotProcess, async_wait_until, wait_until
from bot.testing.scenario import Scenario
from tests.conftest import StartScenario
from tests.test_security import CANARY, GID, finished_posts, start

SECRET = "SECURITYCANARY99"  # the part of CANARY that must not leak
PARTNER_TEAM = "T0PARTNER"  # a workspace of another organization (Slack Connect)


async def click(
    bot: Scenario, slack: FakeSlack, *, channel: str, user: str = "U0001", **fields: Any
) -> dict[str, Any]:
    """Press "Get a fresh link" and return the bot's (only) answer on the response_url."""
    response_url = slack.new_response_url()
    response = await bot.click(
        action_id="fresh_link",
        value=GID,
        user_id=user,
        channel_id=channel,
        response_url=response_url,
        **fields,
    )
    assert response.status == 200 and response.elapsed < 3.0, response.body_text
    await async_wait_until(lambda: slack.responses(response_url), timeout=10)
    (reply,) = slack.responses(response_url)
    assert reply.body.get("response_type") == "ephemeral", reply.body
    return reply.body


def click_process(
    bot: BotProcess, slack: FakeSlack, *, channel: str, user: str = "U0001", **fields: Any
) -> dict[str, Any]:
    """`click` against a bot process over HTTP."""
    response_url = slack.new_response_url()
    response = post_block_actions(
        bot.events_url,
        secret=SIGNING_SECRET,
        action_id="fresh_link",
        value=GID,
        user_id=user,
        channel_id=channel,
        response_url=response_url,
        **fields,
    )
    assert response.status == 200 and response.elapsed < 3.0, response.body_text
    wait_until(lambda: slack.responses(response_url), 10, "the answer on the response_url")
    (reply,) = slack.responses(response_url)
    assert reply.body.get("response_type") == "ephemeral", reply.body
    return reply.body


def got_link(reply: dict[str, Any]) -> bool:
    return SECRET in json.dumps(reply)


async def test_private_policy_gives_fresh_links_only_to_our_org_outside_shared_channels(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    fake_slack.add_channel("GPRIV", is_private=True)
    fake_slack.add_channel("CPUB")
    fake_slack.add_channel("GEXT", is_private=True, is_ext_shared=True)
    fake_slack.add_channel("CSHARED", is_shared=True)  # shared with a workspace outside our org
    fake_asana.set_export(GID, "finished", download_url=CANARY)
    # A dozen clicks in a fraction of a second: more than the default share of the request budget
    # that people get (tests/test_e2e_fair_use.py tests that share).
    bot = await start_scenario(LINK_POLICY="private", POLL_BUDGET_PER_MINUTE="1000")
    # Our own members, in channels no other organization reads: the link, as today.
    assert got_link(await click(bot, fake_slack, channel="GPRIV"))
    assert got_link(await click(bot, fake_slack, channel="CPUB"))

    # A Slack Connect guest never gets it, wherever they click.
    for channel in ("GPRIV", "GEXT", "CPUB"):
        reply = await click(
            bot, fake_slack, channel=channel, user="U0GUEST", user_team_id=PARTNER_TEAM
        )
        assert not got_link(reply), channel
        assert "members of the organization that installed" in reply["text"]

    # Nor does one of ours in a channel shared with another organization.
    for channel in ("GEXT", "CSHARED"):
        reply = await click(bot, fake_slack, channel=channel)
        assert not got_link(reply), channel
        assert "DM with me" in reply["text"] and GID in reply["text"]

    # Nor anywhere Slack will not say what the channel is.
    fake_slack.fail("conversations.info", "internal_error", times=None)
    assert not got_link(await click(bot, fake_slack, channel="GPRIV"))
    fake_slack.clear_faults()
    assert got_link(await click(bot, fake_slack, channel="GPRIV"))
    logs = bot.logs()
    assert "withheld the link" in logs and "foreign_user" in logs and "shared_channel" in logs
    assert SECRET not in logs


@pytest.mark.parametrize(("policy", "guest_gets_it"), [("button", False), ("anywhere", True)])
async def test_other_policies_and_foreign_clickers(
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    start_scenario: StartScenario,
    policy: str,
    guest_gets_it: bool,
) -> None:
    """`button` gives the link to our members only; `anywhere` keeps giving it to everyone."""
    fake_slack.add_channel("CPUB")
    fake_asana.set_export(GID, "finished", download_url=CANARY)
    bot = await start_scenario(LINK_POLICY=policy)
    assert got_link(await click(bot, fake_slack, channel="CPUB"))
    guest = await click(bot, fake_slack, channel="CPUB", user="U0GUEST", user_team_id=PARTNER_TEAM)
    assert got_link(guest) is guest_gets_it


async def test_members_of_our_enterprise_org_are_ours_others_are_not(
    fake_asana: FakeAsana, tmp_path: Path
) -> None:
    """On Enterprise Grid, `user.team_id` is the clicker's org: ours (E0001) is not foreign."""
    with FakeSlack(enterprise_id="E0001") as grid:
        grid.add_channel("GPRIV", is_private=True)
        fake_asana.set_export(GID, "finished", download_url=CANARY)
        url = f"sqlite:///{tmp_path / 'bot.db'}"
        async with Scenario.open(fake_asana, grid, url, LINK_POLICY="private") as bot:
            assert got_link(await click(bot, grid, channel="GPRIV"))
            assert got_link(await click(bot, grid, channel="GPRIV", user_team_id="E0001"))
            other_org = await click(
                bot, grid, channel="GPRIV", user="U0GUEST", user_team_id="E0OTHER"
            )
            assert not got_link(other_org)


def test_installation_learned_lazily_when_auth_test_failed_at_start(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot_env: dict[str, str], tmp_path: Path
) -> None:
    """auth.test failed at start-up: the bot asks again at the first click, then tells ours
    from guests. (While Slack does not answer, nobody counts as ours: tests/test_access.py.)"""
    fake_slack.add_channel("GPRIV", is_private=True)
    fake_asana.set_export(GID, "finished", download_url=CANARY)
    fake_slack.fail("auth.test", "internal_error", times=1)
    bot = start(bot_env, tmp_path, LINK_POLICY="private")
    try:
        assert "auth.test failed" in bot.logs()
        guest = click_process(
            bot, fake_slack, channel="GPRIV", user="U0GUEST", user_team_id=PARTNER_TEAM
        )
        assert not got_link(guest)
        assert got_link(click_process(bot, fake_slack, channel="GPRIV"))
    finally:
        bot.stop()


async def test_channel_shared_after_a_private_answer_gets_no_more_links(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    """A private channel gets a link; then it is shared with another organization; the next
    post that would carry a link (another export finishing, a lookup) comes without it."""
    first, second = "1200000000000401", "1200000000000402"
    canary_1 = CANARY + "1"
    canary_2 = "https://canary.example.test/second.zip?X-Amz-Signature=SECONDCANARY77"
    fake_slack.add_channel("GPRIV", is_private=True)
    fake_asana.set_export(first, "started", download_url=canary_1)
    fake_asana.set_export(second, "started", download_url=canary_2)
    bot = await start_scenario(LINK_POLICY="private")
    for gid in (first, second):
        assert "Watching" in (await bot.command(gid, channel="GPRIV"))["text"]
    fake_asana.set_state(first, "finished")
    await bot.run_until(lambda: "GPRIV" in finished_posts(fake_slack))
    assert SECRET in json.dumps(finished_posts(fake_slack)["GPRIV"]), "private: link posted"

    fake_slack.update_channel("GPRIV", is_ext_shared=True)
    shared_at = time.monotonic()
    fake_asana.set_state(second, "finished")

    def second_post() -> dict[str, Any] | None:
        for call in fake_slack.calls_to("chat.postMessage"):
            meta = call.body.get("metadata") or {}
            finished = call.ok and meta.get("event_type") == "asana_export_finished"
            if finished and second in json.dumps(call.body):
                return call.body
        return None

    await bot.run_until(lambda: second_post() is not None, timeout=60)
    took = time.monotonic() - shared_at
    post = second_post()
    assert post is not None and "SECONDCANARY77" not in json.dumps(post), post
    lookup = await bot.command(first, channel="GPRIV")
    assert SECRET not in json.dumps(lookup), lookup
    assert took < 60, f"the post came {took:.1f}s after the channel was shared"
    print(f"\nshared -> next finished post without link: {took:.2f}s")


async def test_list_all_shows_a_channels_watches_only_to_its_members(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    secret_gid, public_gid, here_gid = "1200000000000501", "1200000000000502", "1200000000000503"
    fake_slack.add_channel("CASK", members=["U0IN", "U0OUT"])
    fake_slack.add_channel("GSECRET", name="merger-talks", is_private=True, members=["U0IN"])
    fake_slack.add_channel("CTEAM", members=["U0IN"])  # public, but U0OUT is not in it
    fake_asana.set_export(secret_gid, "started", organization_name="Hush Acquisition Corp")
    fake_asana.set_export(public_gid, "started", organization_name="Team Org")
    fake_asana.set_export(here_gid, "started", organization_name="Here Org")
    bot = await start_scenario(LINK_POLICY="private")
    for gid, channel in ((secret_gid, "GSECRET"), (public_gid, "CTEAM"), (here_gid, "CASK")):
        answer = await bot.command(gid, channel=channel, user_id="U0IN")
        assert "Watching" in answer["text"]

    outsider = json.dumps(await bot.command("list all", channel="CASK", user_id="U0OUT"))
    assert here_gid in outsider and "CASK" in outsider
    for hidden in (secret_gid, "GSECRET", "Hush Acquisition", public_gid, "CTEAM"):
        assert hidden not in outsider, hidden
    assert "2 more watches are not shown" in outsider

    member = json.dumps(await bot.command("list all", channel="CASK", user_id="U0IN"))
    for shown in (secret_gid, "GSECRET", "Hush Acquisition", public_gid, here_gid):
        assert shown in member, shown
    assert "not shown" not in member

    # When Slack will not say who is in a channel, its watches stay hidden.
    fake_slack.fail("conversations.members", "internal_error", times=None)
    unknown = json.dumps(await bot.command("list all", channel="CASK", user_id="U0IN"))
    assert secret_gid not in unknown and here_gid in unknown
    # `list` (this channel only) is unchanged: the channel's own watches.
    here = json.dumps(await bot.command("list", channel="GSECRET", user_id="U0IN"))
    assert secret_gid in here
