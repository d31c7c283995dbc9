"""The App Home tab (issue 13, item 1): the workspace's dashboard and its buttons.

In process (`scenario`: the real runtime and Bolt app against the fake Asana and fake Slack over
real HTTP, signed like Slack, the clock injected): `app_home_opened` publishes the home with the
active watches, the schedules, the last ended watches and, for admins, "New export"; every view
parses as slack_sdk's Block Kit models and stays within Slack's limits; each button does its job
for those allowed (requester, channel member, admin) and refuses a stranger; the modal starts an
export as `new` does; a private channel's items never reach a non-member; a long list is cut with
a count. Real processes: the home over HTTP (Events API) and over the Socket Mode websocket.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from slack_sdk.models.views import View

from bot import audit, messages
from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.demo.signing import post_event, post_interactive
from bot.models import EndReason, Export, ExportState
from bot.store import WatchCaps
from bot.testing import BotProcess, command, event_posts, posts, text_of, wait_until
from bot.testing.process import SIGNING_SECRET
from bot.testing.scenario import Scenario
from tests.conftest import StartScenario

ORG = "4200000000000042"
ADMIN = "U0ADMIN"
ALICE = "U0ALICE"  # a member of C0001
BOB = "U0BOB"  # a member of no channel
CAROL = "U0CAROL"  # in the private channel only
GID = "1200000000000555"
GID2 = "1200000000000556"
SECRET_GID = "1200000000000999"
SETTINGS = {"LINK_POLICY": "anywhere", "ASANA_ORGANIZATION_GID": ORG, "ADMIN_USERS": ADMIN}


@pytest.fixture
async def hbot(
    start_scenario: StartScenario, fake_asana: FakeAsana, fake_slack: FakeSlack
) -> Scenario:
    fake_asana.set_organization(ORG, "Acme")
    fake_asana.set_export(GID, "pending", organization_name="Acme")
    fake_asana.set_export(GID2, "started", organization_name="Acme")
    fake_asana.set_export(SECRET_GID, "pending", organization_name="Secret Org")
    fake_slack.add_channel("C0001", name="general", members=[ALICE, ADMIN])
    fake_slack.add_channel("C0PRIV", name="secret", is_private=True, members=[CAROL])
    return await start_scenario(**SETTINGS)


def shown(view: dict[str, Any]) -> str:
    return json.dumps(view["blocks"])


def check_view(view: dict[str, Any]) -> None:
    """The view parses as slack_sdk's models, unchanged, and keeps Slack's size limits."""
    blocks = view["blocks"]
    assert 1 <= len(blocks) <= messages.MAX_VIEW_BLOCKS
    fields = {k: v for k, v in view.items() if k != "id"}
    parsed = View(**fields)
    parsed.validate_json()
    for block in parsed.blocks:
        block.validate_json()
    assert [b.to_dict() for b in parsed.blocks] == blocks, "a key slack_sdk does not know"
    ids = [b["block_id"] for b in blocks if "block_id" in b]
    assert len(ids) == len(set(ids))

    def texts(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("plain_text", "mrkdwn") and "text" in node:
                limit = {"header": 150, "button": 75, "field": 2000}.get(where, 3000)
                assert 0 < len(node["text"]) <= limit, (where, node)
            for key, value in node.items():
                kind = node.get("type") if key == "text" else where
                texts(value, "field" if key == "fields" else kind)
        elif isinstance(node, list):
            for item in node:
                texts(item, where)

    texts(blocks, "section")


def button_values(view: dict[str, Any], action_id: str) -> list[str]:
    found = []
    for block in view["blocks"]:
        elements = [block.get("accessory"), *(block.get("elements") or [])]
        found += [
            e.get("value", "")
            for e in elements
            if isinstance(e, dict) and e.get("action_id") == action_id
        ]
    return found


async def watch(bot: Scenario, gid: str, channel: str, user: str) -> None:
    answer = await bot.command(gid, channel=channel, user_id=user)
    assert "Watching" in answer["text"], answer["text"]


async def click(
    bot: Scenario, slack: FakeSlack, user: str, action_id: str, value: str | None = None
) -> dict[str, Any]:
    """`user` clicks a button of their home; the home published after the click."""
    before = len(slack.views)
    payload = slack.home_click_payload(user, action_id=action_id, value=value)
    response = await bot.interact(payload)
    assert response.status == 200 and response.elapsed < 3.0, response
    await bot.settle()
    assert len(slack.views) > before, "the home was not published again"
    view = slack.home_of(user)
    assert view is not None
    check_view(view)
    return view


# ------------------------------------------------------------------------------ the view


async def test_opening_the_home_shows_watches_schedules_and_ended_watches(
    hbot: Scenario, fake_slack: FakeSlack
) -> None:
    await watch(hbot, GID, "C0001", ALICE)
    await watch(hbot, GID2, "C0001", ADMIN)
    await hbot.command(f"unwatch {GID2}", channel="C0001", user_id=ADMIN)
    answer = await hbot.command("schedule weekly mon 02:00", channel="C0001", user_id=ADMIN)
    assert "Schedule #1" in text_of(answer)

    view = await hbot.open_home(ALICE)
    check_view(view)
    text = shown(view)
    assert view["type"] == "home"
    assert f"`{GID}`" in text and "Acme" in text and ":hourglass_flowing_sand: pending" in text
    assert "<#C0001>" in text and f"asked by <@{ALICE}>" in text and "next check" in text
    assert "Schedules (1)" in text and "*#1*" in text and "next 20" in text
    assert "Recently ended" in text and ":no_bell: unwatched" in text and f"`{GID2}`" in text
    assert button_values(view, messages.UNWATCH_ACTION) != []
    assert button_values(view, messages.REMOVE_SCHEDULE_ACTION) == ["1"]
    assert button_values(view, messages.NEW_EXPORT_ACTION) == [], "not an admin"
    admin_view = await hbot.open_home(ADMIN)
    check_view(admin_view)
    assert button_values(admin_view, messages.NEW_EXPORT_ACTION) == [""]
    assert hbot.tracebacks == []


async def test_the_messages_tab_publishes_nothing(hbot: Scenario, fake_slack: FakeSlack) -> None:
    response = await hbot.event(fake_slack.app_home_opened_payload(ALICE, tab="messages"))
    assert response.status == 200
    await hbot.settle()
    assert fake_slack.views == []


async def test_a_private_channels_watch_never_reaches_a_non_member(
    hbot: Scenario, fake_slack: FakeSlack
) -> None:
    await watch(hbot, SECRET_GID, "C0PRIV", CAROL)
    await hbot.command(
        "schedule daily 03:00 tz UTC", channel="C0PRIV", user_id=ADMIN
    )  # an admin may schedule where they are not a member
    await watch(hbot, GID, "C0001", ALICE)
    for outsider in (ALICE, BOB, ADMIN):
        text = shown(await hbot.open_home(outsider))
        assert SECRET_GID not in text and "Secret Org" not in text and "C0PRIV" not in text
        assert "not shown: in channels you are not a member of" in text
    assert "2 items not shown" in shown(fake_slack.home_of(ALICE) or {})
    carol = shown(await hbot.open_home(CAROL))
    assert f"`{SECRET_GID}`" in carol and "Secret Org" in carol and "<#C0PRIV>" in carol
    assert f"`{GID}`" not in carol, "Carol is not in #general"


async def test_foreign_strings_are_escaped_in_the_home(
    hbot: Scenario, fake_asana: FakeAsana
) -> None:
    fake_asana.set_export(GID, "pending", organization_name="<!channel> & *bold*\n> quote")
    await watch(hbot, GID, "C0001", ALICE)
    text = shown(await hbot.open_home(ALICE))
    assert "<!channel>" not in text and "&lt;!channel&gt; &amp;" in text
    assert "\\n> quote" not in text


async def test_a_long_list_is_cut_with_a_count_and_a_pointer_to_list_all(
    hbot: Scenario, fake_slack: FakeSlack
) -> None:
    store, now = hbot.runtime.store, hbot.clock()
    total = 130
    for i in range(total):
        export = Export(gid=str(1300000000000000 + i), state=ExportState.PENDING)
        await store.subscribe(
            team_id="T0001",
            channel_id="C0001",
            user_id=ALICE,
            export=export,
            now=now,
            next_poll_at=now,
            caps=WatchCaps(per_user=1000, per_channel=1000),
        )
    for _ in range(20):
        await hbot.command("schedule daily 04:00", channel="C0001", user_id=ADMIN)
    view = await hbot.open_home(ALICE)
    check_view(view)
    text = shown(view)
    watches = button_values(view, messages.UNWATCH_ACTION)
    assert 0 < len(watches) < total
    assert f"Active watches ({total})" in text
    assert f"and {total - len(watches)} more watches not shown here" in text
    assert "`/asana-export list all` lists them all" in text
    assert "and 5 more schedules not shown here" in text
    assert len(view["blocks"]) <= messages.MAX_VIEW_BLOCKS


# ------------------------------------------------------------------------------ Unwatch


@pytest.mark.parametrize(
    ("clicker", "allowed"),
    [
        pytest.param(BOB, True, id="requester-not-a-member"),
        pytest.param(ALICE, True, id="member-of-the-channel"),
        pytest.param(ADMIN, True, id="admin-not-a-member"),
        pytest.param(CAROL, False, id="stranger"),
    ],
)
async def test_unwatch_is_allowed_to_its_requester_a_member_or_an_admin(
    start_scenario: StartScenario,
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    clicker: str,
    allowed: bool,
) -> None:
    fake_asana.set_export(GID, "pending", organization_name="Acme")
    fake_slack.add_channel("C0002", name="ops", members=[ALICE])
    bot = await start_scenario(**{**SETTINGS, "ADMIN_USERS": ADMIN})
    await watch(bot, GID, "C0002", BOB)  # Bob asked, then left: not a member
    (sub, _), *_ = await bot.runtime.store.list_subscriptions(team_id="T0001")
    view = await click(bot, fake_slack, clicker, messages.UNWATCH_ACTION, str(sub.id))
    active = await bot.runtime.store.list_subscriptions(team_id="T0001")
    text = shown(view)
    if allowed:
        assert active == []
        assert f"Stopped watching export `{GID}` in <#C0002>" in text
        updates = [c.body for c in fake_slack.calls_to("chat.update") if c.ok]
        assert any("No longer watching" in text_of(u) for u in updates), "the card says so"
        await bot.settle()
        (line,) = [
            p for p in event_posts(fake_slack, audit.AUDIT_EVENT_TYPE) if "stopped" in p["text"]
        ]
        assert f"<@{clicker}> stopped watching this export in <#C0002>" in line["text"]
    else:
        assert len(active) == 1, "a stranger's click changes nothing"
        assert ":lock: Only the person who asked" in text
    assert bot.tracebacks == []


@pytest.mark.parametrize("value", ["", "abc", "99999", "-1", "1" * 40, "<!channel>"])
async def test_an_unwatch_click_with_a_stale_or_forged_value_is_answered(
    hbot: Scenario, fake_slack: FakeSlack, value: str
) -> None:
    await watch(hbot, GID, "C0001", ALICE)
    view = await click(hbot, fake_slack, ALICE, messages.UNWATCH_ACTION, value)
    assert "out of date" in shown(view) or "already ended" in shown(view)
    assert len(await hbot.runtime.store.list_subscriptions(team_id="T0001")) == 1
    assert hbot.tracebacks == []


async def test_an_unwatch_click_from_another_workspace_finds_nothing(
    hbot: Scenario, fake_slack: FakeSlack
) -> None:
    await watch(hbot, GID, "C0001", ALICE)
    ((sub, _),) = await hbot.runtime.store.list_subscriptions(team_id="T0001")
    payload = fake_slack.home_click_payload(
        ALICE, action_id=messages.UNWATCH_ACTION, value=str(sub.id), team_id="T0OTHER"
    )
    assert (await hbot.interact(payload)).status == 200
    await hbot.settle()
    assert len(await hbot.runtime.store.list_subscriptions(team_id="T0001")) == 1


# ------------------------------------------------------------------------------ Remove


@pytest.mark.parametrize(
    ("clicker", "allowed"),
    [
        pytest.param("U0ADMIN2", True, id="its-creator"),
        pytest.param(ADMIN, True, id="another-admin"),
        pytest.param(ALICE, False, id="a-member"),
    ],
)
async def test_remove_follows_unschedules_rules(
    start_scenario: StartScenario, fake_slack: FakeSlack, clicker: str, allowed: bool
) -> None:
    fake_slack.add_channel("C0001", members=[ALICE, ADMIN, "U0ADMIN2"])
    bot = await start_scenario(**{**SETTINGS, "ADMIN_USERS": f"{ADMIN},U0ADMIN2"})
    await bot.command("schedule daily 03:00", user_id="U0ADMIN2")
    home = await bot.open_home(clicker)
    assert button_values(home, messages.REMOVE_SCHEDULE_ACTION) == ["1"]
    view = await click(bot, fake_slack, clicker, messages.REMOVE_SCHEDULE_ACTION, "1")
    left = await bot.runtime.store.list_schedules("T0001")
    if allowed:
        assert left == [] and "Schedule #1 is removed" in shown(view)
        assert "Schedules (0)" in shown(view)
    else:
        assert len(left) == 1 and "Only the person who created schedule #1" in shown(view)


# ------------------------------------------------------------------------------ New export


def submission_values(org: str | None, channel: str | None) -> dict[str, dict[str, Any]]:
    org_block, org_action = messages.ORG_INPUT
    ch_block, ch_action = messages.CHANNEL_INPUT
    return {
        org_block: {org_action: {"type": "plain_text_input", "value": org}},
        ch_block: {ch_action: {"type": "conversations_select", "selected_conversation": channel}},
    }


async def test_new_export_opens_a_modal_whose_submission_starts_and_watches_an_export(
    hbot: Scenario, fake_asana: FakeAsana, fake_slack: FakeSlack
) -> None:
    fake_slack.add_channel("C0003", name="exports", members=[ADMIN])
    await hbot.open_home(ADMIN)
    payload = fake_slack.home_click_payload(ADMIN, action_id=messages.NEW_EXPORT_ACTION)
    assert (await hbot.interact(payload)).status == 200
    await hbot.settle()
    (opened,) = fake_slack.modals
    assert opened["trigger_id"] == payload["trigger_id"]
    modal = opened["view"]
    check_view(modal)
    assert modal["callback_id"] == messages.NEW_EXPORT_CALLBACK
    assert ORG in json.dumps(modal["blocks"]), "ASANA_ORGANIZATION_GID is the default"

    submit = fake_slack.view_submission_payload(submission_values(ORG, "C0003"), user_id=ADMIN)
    response = await hbot.interact(submit)
    assert response.status == 200 and response.elapsed < 3.0
    assert not response.body_text or "errors" not in response.body_text
    await hbot.settle()
    (post,) = [r for r in fake_asana.requests if r.method == "POST"]
    assert post.body == {"data": {"organization": ORG}}
    (gid,) = set(fake_asana.export_gids()) - {GID, GID2, SECRET_GID}
    (card,) = posts(fake_slack, "C0003")
    assert gid in text_of(card)
    home = fake_slack.home_of(ADMIN) or {}
    check_view(home)
    assert f"Asana started export `{gid}`" in shown(home)
    assert button_values(home, messages.UNWATCH_ACTION), "the new watch is listed"

    # The same modal submitted again (a double click) starts nothing more.
    await hbot.interact(submit)
    await hbot.settle()
    assert len([r for r in fake_asana.requests if r.method == "POST"]) == 1


@pytest.mark.parametrize(
    ("org", "channel", "block", "says"),
    [
        ("abc", "C0001", "organization", "is not an organization gid"),
        ("1" * 40, "C0001", "organization", "too long"),
        (ORG, None, "channel", "Pick the channel"),
        (ORG, "C0NOBOT", "channel", "I am not in that channel"),
        (ORG, "C0ARCH", "channel", "archived"),
    ],
)
async def test_a_bad_submission_is_answered_with_errors_in_the_modal(
    hbot: Scenario,
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    org: str,
    channel: str | None,
    block: str,
    says: str,
) -> None:
    fake_slack.add_channel("C0NOBOT", is_member=False)
    fake_slack.add_channel("C0ARCH", is_archived=True)
    view = messages.render_new_export_modal(ORG).to_view()
    submit = fake_slack.view_submission_payload(
        submission_values(org, channel), user_id=ADMIN, view=view
    )
    response = await hbot.interact(submit)
    assert response.status == 200 and response.elapsed < 3.0
    answer = response.json()
    assert answer["response_action"] == "errors"
    assert says in answer["errors"][block], answer
    assert [r for r in fake_asana.requests if r.method == "POST"] == []


async def test_new_export_is_for_admins_only(
    hbot: Scenario, fake_asana: FakeAsana, fake_slack: FakeSlack
) -> None:
    view = await click(hbot, fake_slack, ALICE, messages.NEW_EXPORT_ACTION)
    assert fake_slack.modals == [], "no modal for a non-admin"
    assert "exporting a whole organization is for admins only" in shown(view)
    # A forged submission (no modal was opened for Alice) is refused in the modal, too.
    forged = fake_slack.view_submission_payload(
        submission_values(ORG, "C0001"),
        user_id=ALICE,
        view=messages.render_new_export_modal(ORG).to_view(),
    )
    answer = (await hbot.interact(forged)).json()
    assert answer["response_action"] == "errors"
    assert "Only admins" in answer["errors"]["organization"]
    assert [r for r in fake_asana.requests if r.method == "POST"] == []


async def test_refresh_publishes_the_home_again(hbot: Scenario, fake_slack: FakeSlack) -> None:
    await hbot.open_home(ALICE)
    await watch(hbot, GID, "C0001", ALICE)
    view = await click(hbot, fake_slack, ALICE, messages.REFRESH_ACTION)
    assert f"`{GID}`" in shown(view)


async def test_allowed_users_keeps_the_home_closed_to_others(
    start_scenario: StartScenario, fake_slack: FakeSlack
) -> None:
    bot = await start_scenario(**SETTINGS, ALLOWED_USERS=ADMIN)
    view = await bot.open_home(ALICE)
    check_view(view)
    assert "you cannot use this bot" in shown(view)
    assert button_values(view, messages.REFRESH_ACTION) == []


# ------------------------------------------------------------------------------ real processes


def test_http_mode_publishes_the_home_and_answers_a_modal_submission(
    fake_asana: FakeAsana, fake_slack: FakeSlack, http_bot: BotProcess
) -> None:
    fake_asana.set_export(GID, "pending", organization_name="Acme")
    fake_slack.add_channel("C0001", members=["U0001"])
    command(http_bot, fake_slack, GID)
    response = post_event(
        http_bot.events_url, fake_slack.app_home_opened_payload("U0001"), secret=SIGNING_SECRET
    )
    assert response.status == 200 and response.elapsed < 3.0
    view = wait_until(lambda: fake_slack.home_of("U0001"), timeout=10)
    check_view(view)
    assert f"`{GID}`" in shown(view)
    submit = fake_slack.view_submission_payload(
        submission_values("abc", "C0001"),
        user_id="U0001",
        view=messages.render_new_export_modal(None).to_view(),
    )
    answer = post_interactive(http_bot.events_url, submit, secret=SIGNING_SECRET)
    assert answer.status == 200 and answer.json()["response_action"] == "errors"


def test_socket_mode_publishes_the_home_and_handles_its_buttons(
    fake_asana: FakeAsana, fake_slack: FakeSlack, socket_bot: BotProcess
) -> None:
    fake_asana.set_export(GID, "pending", organization_name="Acme")
    fake_slack.add_channel("C0001", members=["U0001"])
    fake_slack.send_slash_command(text=GID, channel_id="C0001", user_id="U0001")
    wait_until(lambda: posts(fake_slack, "C0001"), timeout=10)
    ack = fake_slack.send_event(fake_slack.app_home_opened_payload("U0001"))
    assert ack.latency is not None and ack.latency < 3.0
    view = wait_until(lambda: fake_slack.home_of("U0001"), timeout=10)
    check_view(view)
    (value,) = button_values(view, messages.UNWATCH_ACTION)
    published = len(fake_slack.views)
    fake_slack.send_interactive(
        fake_slack.home_click_payload("U0001", action_id=messages.UNWATCH_ACTION, value=value)
    )
    wait_until(lambda: len(fake_slack.views) > published, timeout=10)
    assert "Stopped watching" in shown(fake_slack.home_of("U0001") or {})
    submit = fake_slack.view_submission_payload(
        submission_values(ORG, None),
        user_id="U0001",
        view=messages.render_new_export_modal(None).to_view(),
    )
    answer = fake_slack.send_interactive(submit)
    assert answer["response_action"] == "errors" and "channel" in answer["errors"]


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda p: p.pop("user"), id="no-user"),
        pytest.param(lambda p: p.update(user="U0001"), id="user-not-an-object"),
        pytest.param(lambda p: p.pop("trigger_id"), id="no-trigger"),
        pytest.param(lambda p: p.update(team=None), id="no-team"),
        pytest.param(lambda p: p["actions"][0].update(value={"x": 1}), id="value-not-a-string"),
    ],
)
async def test_a_malformed_home_click_is_acked_without_a_crash(
    hbot: Scenario, fake_slack: FakeSlack, mutate: Any
) -> None:
    for action in (messages.UNWATCH_ACTION, messages.NEW_EXPORT_ACTION, messages.REFRESH_ACTION):
        payload = fake_slack.home_click_payload(ALICE, action_id=action, value="1")
        mutate(payload)
        response = await hbot.interact(payload)
        assert response.status == 200 and response.elapsed < 3.0
        await hbot.settle()
    assert hbot.tracebacks == []


@pytest.mark.parametrize(
    "state",
    [{}, {"values": None}, {"values": {"organization": "x", "channel": []}}, None, "junk"],
)
async def test_a_malformed_submission_gets_errors_in_the_modal(
    hbot: Scenario, fake_asana: FakeAsana, fake_slack: FakeSlack, state: Any
) -> None:
    payload = fake_slack.view_submission_payload(
        {}, user_id=ADMIN, view=messages.render_new_export_modal(ORG).to_view()
    )
    payload["view"]["state"] = state
    response = await hbot.interact(payload)
    assert response.status == 200 and response.elapsed < 3.0
    answer = response.json()
    assert answer["response_action"] == "errors" and "channel" in answer["errors"]
    await hbot.settle()
    assert [r for r in fake_asana.requests if r.method == "POST"] == []
    assert hbot.tracebacks == []


async def test_a_dead_bot_token_pauses_the_home_like_every_post(
    hbot: Scenario, fake_slack: FakeSlack
) -> None:
    fake_slack.fail("views.publish", "token_revoked")  # auth.test (Bolt's) still passes
    response = await hbot.event(fake_slack.app_home_opened_payload(ALICE))
    assert response.status == 200
    await hbot.settle()
    assert hbot.runtime.notify.status().paused, "views.publish's token_revoked starts the pause"
    tried = len(fake_slack.calls_to("views.publish"))
    await hbot.event(fake_slack.app_home_opened_payload(ALICE))
    await hbot.settle()
    assert len(fake_slack.calls_to("views.publish")) == tried, "not tried again while paused"
    assert hbot.tracebacks == []


async def test_the_last_ended_watches_are_those_the_viewer_may_see(
    hbot: Scenario, fake_slack: FakeSlack
) -> None:
    """Many newer ends in a private channel do not crowd out the viewer's own channel's."""
    store = hbot.runtime.store
    for i, channel in enumerate(["C0001"] * 3 + ["C0PRIV"] * 25):
        now = hbot.clock.advance(60)
        sub, _ = await store.subscribe(
            team_id="T0001",
            channel_id=channel,
            user_id=ALICE,
            export=Export(gid=str(1400000000000000 + i), state=ExportState.PENDING),
            now=now,
            next_poll_at=now,
            caps=WatchCaps(per_user=1000, per_channel=1000),
        )
        assert await store.end_subscription(sub.id, now=now, reason=EndReason.FINISHED)
    text = shown(await hbot.open_home(ALICE))
    assert all(f"`{1400000000000000 + i}`" in text for i in range(3)), text
    assert "1400000000000003" not in text and "25 items not shown" in text
    carol = shown(await hbot.open_home(CAROL))
    assert carol.count(":white_check_mark: finished") == 20, "the last 20 Carol may see"
