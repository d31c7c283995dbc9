"""Pure access and link-policy decisions."""

from __future__ import annotations

import pytest

from bot.access import LinkPolicy, is_allowed, is_private_to_our_org, may_post_link, parse_id_list


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
