"""Lookups: `/asana-export <gid>` answered within Slack's ack deadline, or later via response_url.

The scenarios run in process: signed requests (form-encoded exactly as Slack sends them) are
dispatched into the real Bolt app, whose clients speak real HTTP to the fake Asana and fake Slack on
127.0.0.1. Nothing of the bot is patched. The Socket Mode path runs the real process, end to end.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.demo.signing import SignedResponse, form_body, sign, slash_command_form
from bot.testing import SIGNING_SECRET, BotProcess, async_wait_until, posts
from bot.testing.scenario import Scenario
from tests.conftest import ASANA_TOKEN, StartScenario

GID = "1200000000000001"


def ack_json(response: SignedResponse) -> dict[str, Any]:
    assert response.status == 200, response.body_text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return json.loads(response.body_text)


def all_text(message: dict[str, Any]) -> str:
    """Fallback text plus every string inside the blocks, for content assertions."""
    return message.get("text", "") + "\n" + json.dumps(message.get("blocks", []))


@pytest.mark.parametrize(
    ("state", "emoji", "word"),
    [
        ("pending", ":hourglass_flowing_sand:", "pending"),
        ("started", ":gear:", "started"),
        ("error", ":x:", "failed"),
        ("on_fire", ":grey_question:", "on_fire"),
    ],
)
async def test_each_state_is_shown_to_the_channel(
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    scenario: Scenario,
    state: str,
    emoji: str,
    word: str,
) -> None:
    fake_asana.set_export(GID, state, organization_gid="42", organization_name="Acme Corp")
    response = await scenario.slash(f"  {GID} ")
    assert response.elapsed < 3.0
    ack = ack_json(response)
    if state == "error":  # over: the answer itself is shown to the channel
        assert ack["response_type"] == "in_channel"
        answer = ack
    else:  # still going: the channel gets a status card, the asker a private confirmation
        assert ack["response_type"] == "ephemeral" and "Watching" in ack["text"]
        (card,) = posts(fake_slack)
        assert card["channel"] == "C0001"
        answer = card
    assert answer["text"], "a plain text fallback is always sent"
    content = all_text(answer)
    assert emoji in content and word in content.lower()
    assert "Acme Corp" in content and GID in content
    assert "UTC" in content, "the request time is shown in absolute UTC"
    assert "download" not in answer["text"].lower() or state == "finished"
    sent = fake_asana.requests_for(GID)
    assert len(sent) == 1
    assert "state" in sent[0].query["opt_fields"]
    assert sent[0].headers["user-agent"].startswith("asana-export-bot/")


async def test_finished_export_shows_link_and_validity(
    fake_asana: FakeAsana, fake_slack: FakeSlack, scenario: Scenario
) -> None:
    fake_slack.add_channel("C0001", is_private=True)  # LINK_POLICY=private allows links here
    link = "https://exports.example.test/org.json.gz?X-Amz-Signature=canary1234"
    fake_asana.set_export(GID, "finished", organization_name="Acme", download_url=link)
    answer = ack_json(await scenario.slash(GID))
    buttons = [
        element
        for block in answer["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
    ]
    assert any(b.get("url") == link for b in buttons), "a download button carries the link"
    assert "valid until" in all_text(answer).lower()
    assert link not in answer["text"], "the fallback text (shown in notifications) has no link"
    assert ":white_check_mark:" in all_text(answer)
    assert "canary1234" not in scenario.logs(), "the link never reaches the logs"


async def test_not_found_is_ephemeral_and_says_what_to_do(
    fake_asana: FakeAsana, fake_slack: FakeSlack, scenario: Scenario
) -> None:
    answer = ack_json(await scenario.slash("999"))
    assert answer["response_type"] == "ephemeral"
    assert "999" in all_text(answer) and "gid" in all_text(answer)


async def test_bad_token_is_ephemeral_and_names_the_fix(
    fake_asana: FakeAsana, fake_slack: FakeSlack, scenario: Scenario
) -> None:
    fake_asana.set_export(GID, "pending")
    fake_asana.set_token("some-other-token")  # the bot's token is now wrong: 401
    answer = ack_json(await scenario.slash(GID))
    assert answer["response_type"] == "ephemeral"
    assert "ASANA_TOKEN" in all_text(answer)
    assert ASANA_TOKEN not in scenario.logs()


async def test_rate_limit_then_success_waits_for_retry_after(
    fake_asana: FakeAsana, fake_slack: FakeSlack, scenario: Scenario
) -> None:
    fake_asana.set_export(GID, "finished", organization_name="Acme")
    fake_asana.fail(429, gid=GID, retry_after=1)
    response = await scenario.slash(GID)
    answer = ack_json(response)
    assert response.elapsed < 3.0
    assert answer["response_type"] == "in_channel"
    first, second = fake_asana.requests_for(GID)
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 1.0, "Retry-After was honoured"


async def test_slow_asana_acks_in_time_and_responds_later(
    fake_asana: FakeAsana, fake_slack: FakeSlack, scenario: Scenario
) -> None:
    fake_asana.set_export(GID, "finished", organization_name="Slow Org")
    fake_asana.set_delay(3.5, gid=GID)
    response_url = fake_slack.new_response_url()
    response = await scenario.slash(GID, response_url=response_url)
    assert response.elapsed < 3.0, "ack inside Slack's 3 seconds"
    ack = ack_json(response)
    assert ack["response_type"] == "ephemeral" and "Looking up" in ack["text"]
    await async_wait_until(lambda: fake_slack.responses(response_url), timeout=10)
    (delivered,) = fake_slack.responses(response_url)
    assert delivered.body["response_type"] == "in_channel"
    assert "Slow Org" in all_text(delivered.body)


async def test_hanging_asana_gets_a_timeout_message(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    fake_asana.set_export(GID, "started")
    fake_asana.set_delay(30, gid=GID)
    bot = await start_scenario(LOOKUP_TIMEOUT_SECONDS="3", ASANA_TIMEOUT_SECONDS="2")
    response_url = fake_slack.new_response_url()
    response = await bot.slash(GID, response_url=response_url)
    assert response.elapsed < 3.0
    await async_wait_until(lambda: fake_slack.responses(response_url), timeout=10)
    (delivered,) = fake_slack.responses(response_url)
    assert delivered.body["response_type"] == "ephemeral"
    assert "did not answer" in all_text(delivered.body)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("", "which export"), ("hello", "not an export gid"), ("12 34", "did not understand")],
)
async def test_bad_text_gets_ephemeral_usage(
    fake_asana: FakeAsana, fake_slack: FakeSlack, scenario: Scenario, text: str, fragment: str
) -> None:
    answer = ack_json(await scenario.slash(text))
    assert answer["response_type"] == "ephemeral"
    assert fragment in all_text(answer)
    assert "/asana-export" in all_text(answer)
    assert fake_asana.requests == []


async def test_help(fake_slack: FakeSlack, scenario: Scenario) -> None:
    answer = ack_json(await scenario.slash("help"))
    assert answer["response_type"] == "ephemeral"
    assert "/asana-export" in all_text(answer)


@pytest.mark.parametrize("forgery", ["unsigned", "wrong_secret", "tampered", "stale", "future"])
async def test_forged_or_stale_requests_are_rejected_without_side_effects(
    fake_asana: FakeAsana, fake_slack: FakeSlack, scenario: Scenario, forgery: str
) -> None:
    fake_asana.set_export(GID, "finished")
    fake_slack.clear()
    body = form_body(slash_command_form(text=GID, response_url=fake_slack.new_response_url()))
    now = int(time.time())
    kwargs: dict[str, Any] = {}
    if forgery == "unsigned":
        kwargs["signature"] = ""
    elif forgery == "wrong_secret":
        kwargs["signature"] = sign(body, "not-the-secret", now)
        kwargs["timestamp"] = now
    elif forgery == "tampered":
        kwargs["signature"] = sign(body.replace(b"general", b"generaL"), SIGNING_SECRET, now)
        kwargs["timestamp"] = now
    elif forgery == "stale":
        kwargs["timestamp"] = now - 6 * 60
    elif forgery == "future":
        kwargs["timestamp"] = now + 6 * 60
    response = await scenario.signed(body, **kwargs)
    assert response.status == 401
    # Bolt refused before any listener ran: nothing can still be on its way.
    assert fake_asana.requests == []
    assert [c.method for c in fake_slack.calls if c.method != "auth.test"] == []
    assert fake_slack.responses() == []


async def test_organization_name_full_of_mrkdwn_pings_nobody(
    fake_asana: FakeAsana, fake_slack: FakeSlack, scenario: Scenario
) -> None:
    evil = "<!channel> <@U999> <https://evil.example|click> & *bold*"
    fake_asana.set_export(GID, "pending", organization_name=evil)
    answer = ack_json(await scenario.slash(GID))
    content = all_text(answer)
    assert "<!channel>" not in content and "<@U999>" not in content
    assert "<https://evil.example" not in content
    assert "&lt;!channel&gt;" in content and "&amp;" in content


def test_socket_mode_lookup_and_slow_respond(
    fake_asana: FakeAsana, fake_slack: FakeSlack, socket_bot: BotProcess
) -> None:
    fake_asana.set_export(GID, "pending", organization_name="Socket Org")
    answer = fake_slack.send_slash_command(text=GID, timeout=3.0)
    assert fake_slack.socket_acks[-1].latency < 3.0
    assert answer["response_type"] == "ephemeral" and "Watching" in answer["text"]
    (card,) = posts(fake_slack)
    assert "Socket Org" in all_text(card)

    fake_asana.set_state(GID, "finished")
    fake_asana.set_delay(3.5, gid=GID)
    response_url = fake_slack.new_response_url()
    ack = fake_slack.send_slash_command(text=GID, response_url=response_url, timeout=3.0)
    assert "Looking up" in ack["text"]
    fake_slack.wait_for(lambda: fake_slack.responses(response_url), timeout=10)
    assert "Socket Org" in all_text(fake_slack.responses(response_url)[0].body)

    bad = fake_slack.send_slash_command(text="nonsense!", timeout=3.0)
    assert bad["response_type"] == "ephemeral"
