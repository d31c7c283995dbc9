"""Pure access and link-policy decisions."""

from __future__ import annotations

import pytest

from bot.access import (
    ClickVerdict,
    LinkPolicy,
    OrgIdentity,
    clicker_team_id,
    is_allowed,
    is_our_member,
    is_private_to_our_org,
    may_create_export,
    may_give_link,
    may_list_watch,
    may_post_link,
    parse_id_list,
)
from bot.slack_org import identity_from_auth


def test_parse_id_list() -> None:
    assert parse_id_list("") == frozenset()
    assert parse_id_list(" U1A, U2B ;C3 ") == {"U1A", "U2B", "C3"}
    with pytest.raises(ValueError, match="not a Slack ID"):
        parse_id_list("U1A, <@U2>")


@pytest.mark.parametrize(
    ("users", "channels", "user", "channel", "allowed"),
    [
        ("", "", "U1", "C1", True),
        ("U1", "", "U1", "C9", True),
        ("U1", "", "U2", "C1", False),
        ("", "C1", "U9", "C1", True),
        ("", "C1", "U9", "C2", False),
        ("U1", "C1", "U1", "C2", False),
        ("U1", "C1", "", "", False),
    ],
)
def test_is_allowed(users: str, channels: str, user: str, channel: str, allowed: bool) -> None:
    result = is_allowed(
        user,
        channel,
        allowed_users=parse_id_list(users),
        allowed_channels=parse_id_list(channels),
    )
    assert result is allowed


@pytest.mark.parametrize(
    ("channel", "private"),
    [
        (None, False),
        ({}, False),
        ({"is_channel": True}, False),
        ({"is_private": True}, True),
        ({"is_im": True}, True),
        ({"is_mpim": True, "is_private": True}, True),
        ({"is_private": True, "is_ext_shared": True}, False),
        ({"is_private": True, "is_pending_ext_shared": True}, False),
        ({"is_private": True, "is_shared": True}, False),
        ({"is_private": True, "is_shared": True, "is_org_shared": True}, True),
    ],
)
def test_private_to_our_org(channel: dict | None, private: bool) -> None:
    assert is_private_to_our_org(channel) is private


def test_policies() -> None:
    private = {"is_private": True}
    assert may_post_link(LinkPolicy.ANYWHERE, None)
    assert not may_post_link(LinkPolicy.BUTTON, private)
    assert may_post_link(LinkPolicy.PRIVATE, private)
    assert not may_post_link(LinkPolicy.PRIVATE, {"is_channel": True})


OURS = OrgIdentity("T0001")
GRID = OrgIdentity("T0001", "E0001")
INTERNAL = {"is_channel": True}
PRIVATE = {"is_private": True}
EXT = {"is_private": True, "is_ext_shared": True}


def test_clicker_team_id_reads_user_team_id_only() -> None:
    assert clicker_team_id({"user": {"id": "U1", "team_id": "T9"}, "team": {"id": "T1"}}) == "T9"
    assert clicker_team_id({"user": {"id": "U1"}, "team": {"id": "T1"}}) is None
    assert clicker_team_id({"user": "U1"}) is None
    assert clicker_team_id({"user": {"team_id": ""}}) is None


@pytest.mark.parametrize(
    ("team", "org", "ours"),
    [
        ("T0001", OURS, True),
        ("T0002", OURS, False),  # a Slack Connect guest
        ("E0001", OURS, False),  # an Enterprise org we do not belong to
        ("E0001", GRID, True),  # another workspace of our own Enterprise org
        ("E0002", GRID, False),
        (None, OURS, False),
        ("T0001", None, False),  # installation unknown: foreign, the safe answer
    ],
)
def test_is_our_member(team: str | None, org: OrgIdentity | None, ours: bool) -> None:
    assert is_our_member(team, org) is ours


@pytest.mark.parametrize(
    ("policy", "team", "org", "channel", "verdict"),
    [
        (LinkPolicy.PRIVATE, "T0001", OURS, PRIVATE, ClickVerdict.GIVE),
        (LinkPolicy.PRIVATE, "T0001", OURS, INTERNAL, ClickVerdict.GIVE),
        (LinkPolicy.PRIVATE, "T0002", OURS, PRIVATE, ClickVerdict.FOREIGN_USER),
        (LinkPolicy.PRIVATE, "T0002", OURS, EXT, ClickVerdict.FOREIGN_USER),
        (LinkPolicy.PRIVATE, "T0001", OURS, EXT, ClickVerdict.SHARED_CHANNEL),
        (LinkPolicy.PRIVATE, "T0001", OURS, None, ClickVerdict.SHARED_CHANNEL),
        (LinkPolicy.PRIVATE, "T0001", None, PRIVATE, ClickVerdict.FOREIGN_USER),
        (LinkPolicy.PRIVATE, "E0001", GRID, INTERNAL, ClickVerdict.GIVE),
        (
            LinkPolicy.PRIVATE,
            "T0001",
            OURS,
            {"is_shared": True, "is_org_shared": True},
            ClickVerdict.GIVE,
        ),
        (LinkPolicy.BUTTON, "T0001", OURS, INTERNAL, ClickVerdict.GIVE),
        (LinkPolicy.BUTTON, "T0002", OURS, INTERNAL, ClickVerdict.FOREIGN_USER),
        (LinkPolicy.BUTTON, "T0001", OURS, EXT, ClickVerdict.SHARED_CHANNEL),
        (LinkPolicy.ANYWHERE, "T0002", None, None, ClickVerdict.GIVE),
    ],
)
def test_may_give_link(
    policy: LinkPolicy,
    team: str | None,
    org: OrgIdentity | None,
    channel: dict | None,
    verdict: ClickVerdict,
) -> None:
    assert may_give_link(policy, clicker_team=team, org=org, channel=channel) is verdict


def test_may_list_watch() -> None:
    assert may_list_watch("C1", asked_in="C1", asker_is_member=None)
    assert may_list_watch("G2", asked_in="C1", asker_is_member=True)
    assert not may_list_watch("G2", asked_in="C1", asker_is_member=False)
    assert not may_list_watch("G2", asked_in="C1", asker_is_member=None)


def test_identity_from_auth() -> None:
    assert identity_from_auth({"team_id": "T1", "enterprise_id": "E1"}) == OrgIdentity("T1", "E1")
    assert identity_from_auth({"team_id": "T1", "enterprise_id": ""}) == OrgIdentity("T1")
    assert identity_from_auth({"ok": True}) is None
    assert identity_from_auth(None) is None


@pytest.mark.parametrize(
    ("user", "admin_users", "workspace_admin", "allowed"),
    [
        ("U1", frozenset({"U1"}), None, True),  # listed: Slack is not even asked
        ("U2", frozenset({"U1"}), True, False),  # the list is the whole list
        ("", frozenset({"U1"}), None, False),
        (None, frozenset({"U1"}), None, False),
        ("U1", frozenset(), True, True),  # no list: workspace admins and owners
        ("U1", frozenset(), False, False),
        ("U1", frozenset(), None, False),  # users.info failed: refused
    ],
)
def test_who_may_create_an_export(
    user: str | None, admin_users: frozenset[str], workspace_admin: bool | None, allowed: bool
) -> None:
    assert (
        may_create_export(user, admin_users=admin_users, workspace_admin=workspace_admin) is allowed
    )
