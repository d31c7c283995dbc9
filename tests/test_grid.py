"""Enterprise Grid, piece by piece: who installed us, which workspaces are ours, who is an admin
where, which workspace a payload comes from, and the fake Slack's org-wide install."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import (
    ClickVerdict,
    LinkPolicy,
    OrgIdentity,
    is_admin_here,
    is_our_member,
    may_give_link,
    payload_team_id,
)
from bot.demo.fake_slack import FakeSlack
from bot.doctor.checks import SlackAnswer, Status, slack_auth_result
from bot.slack_org import Installation, WorkspaceAdmins, identity_from_auth
from tests.conftest import StartScenario

ORG_WIDE = OrgIdentity("E1", "E1", org_wide=True)
WORKSPACE_OF_GRID = OrgIdentity("T1", "E1")  # installed on one workspace of a Grid org
OURS = frozenset({"T1", "T2"})
PRIVATE = {"id": "G1", "is_private": True}


def test_identity_of_an_org_wide_install() -> None:
    auth: dict[str, Any] = {"team_id": "E1", "enterprise_id": "E1", "is_enterprise_install": True}
    assert identity_from_auth(auth) == ORG_WIDE
    # Slack may name no workspace at all for the org's token: the org stands in.
    for team in (None, ""):
        assert identity_from_auth({**auth, "team_id": team}) == ORG_WIDE
    assert identity_from_auth({"team_id": None, "is_enterprise_install": True}) is None
    assert identity_from_auth({"team_id": "T1", "enterprise_id": "E1"}) == WORKSPACE_OF_GRID
    not_true = {"team_id": "T1", "enterprise_id": "E1", "is_enterprise_install": "yes"}
    assert identity_from_auth(not_true) == WORKSPACE_OF_GRID


@pytest.mark.parametrize(
    ("team", "org", "workspaces", "ours"),
    [
        ("T1", ORG_WIDE, OURS, True),
        ("T2", ORG_WIDE, OURS, True),  # another workspace of the org
        ("E1", ORG_WIDE, OURS, True),  # the org itself
        ("T3", ORG_WIDE, OURS, False),  # a workspace not granted (or not ours)
        ("E2", ORG_WIDE, OURS, False),  # another Enterprise org
        ("T2", ORG_WIDE, frozenset(), False),  # auth.teams.list would not say: foreign
        ("T2", WORKSPACE_OF_GRID, OURS, False),  # only an org-wide install spans workspaces
        ("E1", WORKSPACE_OF_GRID, frozenset(), True),
        (None, ORG_WIDE, OURS, False),
    ],
)
def test_members_of_an_org_wide_install(
    team: str | None, org: OrgIdentity, workspaces: frozenset[str], ours: bool
) -> None:
    assert is_our_member(team, org, workspaces) is ours
    verdict = may_give_link(
        LinkPolicy.PRIVATE, clicker_team=team, org=org, channel=PRIVATE, workspaces=workspaces
    )
    assert verdict is (ClickVerdict.GIVE if ours else ClickVerdict.FOREIGN_USER)


def test_payload_team_id() -> None:
    assert payload_team_id({"team": {"id": "T1"}, "user": {"team_id": "T2"}}) == "T1"
    # Org-wide installs may get `team: null` in clicks: the acting user's workspace.
    assert payload_team_id({"team": None, "user": {"id": "W1", "team_id": "T2"}}) == "T2"
    assert payload_team_id({"team": None, "view": {"team_id": "T3"}}) == "T3"
    assert payload_team_id({"team_id": "T4"}) == "T4"
    for junk in ({}, {"team": "x"}, {"team": {"id": 5}, "user": "W1"}, [], None):
        assert payload_team_id(junk) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("user", "team", "admin"),
    [
        ({"is_admin": True, "team_id": "T1"}, "T1", True),
        ({"is_admin": True, "team_id": "T1"}, None, True),
        ({"is_owner": True, "team_id": "T1", "enterprise_user": {}}, "T1", True),
        # A workspace admin of the Grid org is an admin in their own workspace only.
        ({"is_admin": True, "team_id": "T1", "enterprise_user": {}}, "T2", False),
        ({"team_id": "T1", "enterprise_user": {"is_admin": True}}, "T2", True),  # org admin
        ({"team_id": "T1", "enterprise_user": {"is_owner": True}}, "T2", True),
        ({"is_admin": True, "team_id": "T1", "deleted": True}, "T1", False),
        ({"team_id": "T1", "enterprise_user": {"is_admin": False}}, "T1", False),
        ({"is_admin": True}, "T2", True),  # not a Grid user: one workspace, nothing to compare
    ],
)
def test_is_admin_here(user: dict[str, Any], team: str | None, admin: bool) -> None:
    assert is_admin_here(user, team) is admin


@pytest.fixture
def grid() -> Iterator[FakeSlack]:
    with FakeSlack(team_id="T1", enterprise_id="E1", org_wide=True) as server:
        server.add_workspace("T2", domain="two", name="Two")
        yield server


@pytest.fixture
def client(grid: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=grid.bot_token, base_url=grid.api_url, retry_handlers=[])


async def test_org_workspaces_asked_once_and_kept(grid: FakeSlack, client: AsyncWebClient) -> None:
    clock = [0.0]
    installation = Installation(workspaces_ttl=300, clock=lambda: clock[0])
    assert await installation.get(client) == OrgIdentity("E1", "E1", org_wide=True)
    grid.fail("auth.teams.list", "internal_error")
    assert await installation.workspaces(client) == frozenset(), "Slack did not say: none"
    assert await installation.workspaces(client) == {"T1", "T2"}
    assert await installation.workspaces(client) == {"T1", "T2"}
    assert len(grid.calls_to("auth.teams.list")) == 2, "kept once known"
    grid.add_workspace("T3")
    clock[0] = 301.0
    grid.fail("auth.teams.list", "internal_error")
    assert await installation.workspaces(client) == {"T1", "T2"}, "a failure keeps the last"
    assert await installation.workspaces(client) == {"T1", "T2", "T3"}


async def test_no_workspaces_asked_for_a_single_workspace_install() -> None:
    with FakeSlack(enterprise_id="E1") as single:
        client = AsyncWebClient(token=single.bot_token, base_url=single.api_url)
        installation = Installation()
        assert await installation.get(client) == OrgIdentity("T0001", "E1")
        assert await installation.workspaces(client) == frozenset()
        assert single.calls_to("auth.teams.list") == []


async def test_workspace_admins_asks_per_workspace(grid: FakeSlack, client: AsyncWebClient) -> None:
    grid.set_user("W1", team_id="T1", is_admin=True)
    admins = WorkspaceAdmins()
    assert await admins.is_admin(client, "W1", "T2") is False
    assert await admins.is_admin(client, "W1", "T1") is True, "a no elsewhere is not a no here"
    assert await admins.is_admin(client, "W1") is True


async def test_fake_org_wide_install_answers_as_slack(
    grid: FakeSlack, client: AsyncWebClient
) -> None:
    auth = await client.auth_test()
    assert auth["team_id"] == "E1" and auth["enterprise_id"] == "E1"
    assert auth["is_enterprise_install"] is True
    teams = await client.auth_teams_list()
    assert [t["id"] for t in teams["teams"]] == ["T1", "T2"]
    grid.set_user("W2", team_id="T2")
    user = (await client.users_info(user="W2"))["user"]
    assert user["team_id"] == "T2" and user["enterprise_user"]["enterprise_id"] == "E1"
    grid.add_channel("CBOTH", team_id="T1", shared_with=["T2"])
    channel = (await client.conversations_info(channel="CBOTH"))["channel"]
    assert channel["is_shared"] and channel["is_org_shared"] and not channel["is_ext_shared"]
    assert channel["shared_team_ids"] == ["T1", "T2"]

    command = grid.slash_command_payload(text="help", user_id="W2", channel_id="CBOTH")
    assert command["team_id"] == "T2" and command["team_domain"] == "two"
    assert command["enterprise_id"] == "E1" and command["is_enterprise_install"] == "true"
    click = grid.block_actions_payload(action_id="x", user_id="W2", channel_id="CBOTH")
    assert click["team"] is None and click["user"]["team_id"] == "T2"
    assert click["is_enterprise_install"] is True and click["enterprise"]["id"] == "E1"


def test_fake_single_workspace_payloads_unchanged() -> None:
    with FakeSlack() as plain:
        command = plain.slash_command_payload(text="help")
        assert command["team_id"] == "T0001" and command["is_enterprise_install"] == "false"
        assert "enterprise_id" not in command
        click = plain.block_actions_payload(action_id="x")
        assert click["team"] == {"id": "T0001", "domain": "example"}
        assert click["enterprise"] is None and click["is_enterprise_install"] is False
    with pytest.raises(ValueError, match="enterprise_id"):
        FakeSlack(org_wide=True)


def test_manifest_allows_an_org_wide_install() -> None:
    manifest = yaml.safe_load((Path(__file__).parent.parent / "manifest.yml").read_text())
    assert manifest["settings"]["org_deploy_enabled"] is True


def test_doctor_names_an_org_wide_install() -> None:
    auth = {"ok": True, "team": "Grid Org", "team_id": "E1", "user": "bot", "user_id": "U1"}
    org_wide = slack_auth_result(
        SlackAnswer({**auth, "enterprise_id": "E1", "is_enterprise_install": True}), "x"
    )
    assert (
        org_wide.status is Status.PASS and "installed org-wide on Grid Org (E1)" in org_wide.detail
    )
    one = slack_auth_result(SlackAnswer({**auth, "team_id": "T1", "enterprise_id": "E1"}), "x")
    assert "workspace Grid Org (T1), Enterprise org E1" in one.detail


async def test_single_workspace_install_on_grid_keeps_its_admins(
    fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    """Installed on one workspace of a Grid org, users.info's admin flags count as before,
    whichever workspace of the org Slack names as the admin's own."""
    fake_slack.enterprise_id = "E1"
    fake_slack.set_user("W1", team_id="T0OTHER", is_admin=True)
    bot = await start_scenario(ASANA_ORGANIZATION_GID="4200000000000042")
    answer = await bot.command("schedule daily 03:30", user_id="W1", team_id="T0001")
    assert "Schedule #1" in answer["text"], answer
