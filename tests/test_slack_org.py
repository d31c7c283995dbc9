"""bot.slack_org and LinkGate against the fake Slack: what is cached, what unknown means."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import LinkPolicy, OrgIdentity
from bot.demo.fake_slack import FakeSlack
from bot.slack_org import Installation, WorkspaceAdmins, is_member, memberships
from bot.slack_out import LinkGate


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=fake.bot_token, base_url=fake.api_url, retry_handlers=[])


async def test_link_gate_asks_again_after_yes_and_caches_only_no(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    clock = [0.0]
    gate = LinkGate(client, LinkPolicy.PRIVATE, ttl=300, clock=lambda: clock[0])
    fake.add_channel("GPRIV", is_private=True)
    fake.add_channel("CPUB")
    assert await gate.allowed("GPRIV")
    fake.update_channel("GPRIV", is_ext_shared=True)
    assert not await gate.allowed("GPRIV"), "a yes is never reused"
    asked = len(fake.calls_to("conversations.info"))
    assert not await gate.allowed("CPUB")
    fake.update_channel("CPUB", is_private=True)
    assert not await gate.allowed("CPUB"), "a no is kept for ttl"
    assert len(fake.calls_to("conversations.info")) == asked + 1
    clock[0] = 301
    assert await gate.allowed("CPUB")


async def test_installation_remembered_or_asked_lazily(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    installation = Installation()
    fake.fail("auth.test", "internal_error")
    assert await installation.get(client) is None, "Slack did not say: unknown"
    assert await installation.get(client) == OrgIdentity("T0001")
    calls = len(fake.calls_to("auth.test"))
    assert await installation.get(client) == OrgIdentity("T0001")
    assert len(fake.calls_to("auth.test")) == calls, "asked once it is known"
    remembered = Installation()
    remembered.remember({"ok": True, "team_id": "T9", "enterprise_id": "E9"})
    assert await remembered.get(client) == OrgIdentity("T9", "E9")


async def test_memberships_unknown_when_slack_fails_or_is_late(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    fake.add_channel("GIN", is_private=True, members=["U1"])
    fake.add_channel("GOUT", is_private=True, members=["U2"])
    assert await is_member(client, "GIN", "U1") is True
    assert await is_member(client, "GOUT", "U1") is False
    found = await memberships(client, ["GIN", "GOUT", "GIN"], "U1", deadline=5)
    assert found == {"GIN": True, "GOUT": False}
    fake.fail("conversations.members", "internal_error", channel="GIN")
    assert await is_member(client, "GIN", "U1") is None
    fake.set_delay("conversations.members", 2.0)
    late = await memberships(client, ["GIN"], "U1", deadline=0.3)
    assert late == {"GIN": None}


async def test_workspace_admins_keeps_only_a_no_and_never_a_failure(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    clock = [0.0]
    admins = WorkspaceAdmins(ttl=60, clock=lambda: clock[0])
    fake.set_user("U0BOSS", is_admin=True)
    fake.set_user("U0OWNER", is_owner=True)
    fake.set_user("U0GONE", is_admin=True, deleted=True)
    assert await admins.is_admin(client, "U0BOSS") is True
    assert await admins.is_admin(client, "U0OWNER") is True
    assert await admins.is_admin(client, "U0GONE") is False, "a deactivated admin is none"
    assert await admins.is_admin(client, "U0MEMBER") is False
    fake.set_user("U0BOSS")  # demoted
    assert await admins.is_admin(client, "U0BOSS") is False, "a yes is never reused"
    fake.set_user("U0MEMBER", is_admin=True)  # promoted
    assert await admins.is_admin(client, "U0MEMBER") is False, "a no is kept for the ttl"
    clock[0] = 61
    assert await admins.is_admin(client, "U0MEMBER") is True
    fake.fail("users.info", "internal_error")
    assert await admins.is_admin(client, "U0OWNER") is None, "Slack would not say"
    assert await admins.is_admin(client, "U0OWNER") is True, "a failure is not kept"
    fake.scopes = ("commands", "chat:write")
    assert await admins.is_admin(client, "U0NEW") is None, "missing users:read: unknown"
