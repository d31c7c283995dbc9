"""The fake Slack behaves like Slack for the real slack_sdk / slack_bolt clients."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.demo.fake_slack import DEFAULT_BOT_SCOPES, FakeSlack, validate_blocks
from bot.demo.signing import (
    async_post_signed,
    block_actions_form,
    form_body,
    post_block_actions,
    post_signed,
    post_slash_command,
    sign,
    signed_headers,
    slash_command_form,
)

SECRET = "test-signing-secret"
SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "*Export* 1234"}}
METADATA = {"event_type": "asana_export_finished", "event_payload": {"gid": "1234", "sub": 7}}


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=fake.bot_token, base_url=fake.api_url, retry_handlers=[])


def _error(exc: pytest.ExceptionInfo[SlackApiError]) -> str:
    return str(exc.value.response.get("error"))


# --------------------------------------------------------------------------- Web API


async def test_auth_test_identifies_the_bot(fake: FakeSlack, client: AsyncWebClient) -> None:
    resp = await client.auth_test()
    assert resp["team_id"] == "T0001"
    assert resp["user_id"] == "U0BOT"
    assert resp["bot_id"] == fake.bot_id
    call = fake.calls_to("auth.test")[0]
    assert call.token == fake.bot_token
    assert call.ok and call.status == 200


async def test_granted_scopes_come_in_the_x_oauth_scopes_header(fake: FakeSlack) -> None:
    """Like Slack: on every call the bot token was accepted on; configurable; never to others."""
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url, retry_handlers=[])
    resp = await client.auth_test()
    assert resp.headers["x-oauth-scopes"].split(",") == list(DEFAULT_BOT_SCOPES)
    fake.scopes = ("commands", "chat:write")
    assert (await client.auth_test()).headers["X-OAuth-Scopes"] == "commands,chat:write"
    fake.scopes = None  # a proxy that strips the header
    assert "x-oauth-scopes" not in (await client.auth_test()).headers
    fake.scopes = DEFAULT_BOT_SCOPES
    wrong = AsyncWebClient(token="xoxb-wrong", base_url=fake.api_url, retry_handlers=[])
    with pytest.raises(SlackApiError) as exc:
        await wrong.auth_test()
    assert "x-oauth-scopes" not in exc.value.response.headers


async def test_apps_connections_open_takes_the_app_token(fake: FakeSlack) -> None:
    """apps.connections.open hands out a websocket URL of this fake for the app token only."""
    app = AsyncWebClient(token=fake.app_token, base_url=fake.api_url, retry_handlers=[])
    resp = await app.apps_connections_open(app_token=fake.app_token)
    assert resp["url"].startswith(f"ws://127.0.0.1:{fake.port}/socket?ticket=")
    fake.fail("apps.connections.open", "invalid_auth")
    with pytest.raises(SlackApiError) as exc:
        await app.apps_connections_open(app_token=fake.app_token)
    assert _error(exc) == "invalid_auth"


async def test_post_message_stores_blocks_and_metadata(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    resp = await client.chat_postMessage(
        channel="C0001", text="Export 1234", blocks=[SECTION], metadata=METADATA
    )
    assert resp["channel"] == "C0001"
    assert resp["message"]["blocks"] == [SECTION]
    assert resp["message"]["metadata"] == METADATA
    assert "warning" not in resp.data
    seconds, micros = resp["ts"].split(".")
    assert len(seconds) == 10 and len(micros) == 6

    [stored] = fake.messages("C0001")
    assert stored["ts"] == resp["ts"]
    assert stored["text"] == "Export 1234"
    assert stored["blocks"] == [SECTION]
    assert stored["metadata"] == METADATA
    assert stored["user"] == "U0BOT"
    assert stored["updates"] == []

    call = fake.calls_to("chat.postMessage")[0]
    assert call.headers["content-type"].startswith("application/json")
    assert call.headers["Authorization"] == f"Bearer {fake.bot_token}"
    assert call.body["blocks"] == [SECTION]
    assert fake.warnings == []


async def test_ts_are_unique_and_increasing(client: AsyncWebClient) -> None:
    sequential = [
        (await client.chat_postMessage(channel="C0001", text="s"))["ts"] for _ in range(5)
    ]
    assert [Decimal(ts) for ts in sequential] == sorted({Decimal(ts) for ts in sequential})
    assert all(abs(float(ts) - time.time()) < 60 for ts in sequential)  # wall-clock based

    responses = await asyncio.gather(
        *(client.chat_postMessage(channel="C0001", text=f"m{i}") for i in range(20))
    )
    assert len({r["ts"] for r in responses}) == 20
    assert min(Decimal(r["ts"]) for r in responses) > Decimal(sequential[-1])


async def test_chat_update_edits_in_place_and_needs_an_existing_message(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    posted = await client.chat_postMessage(channel="C0001", text="pending", blocks=[SECTION])
    new_block = {"type": "section", "text": {"type": "mrkdwn", "text": "finished"}}
    updated = await client.chat_update(
        channel="C0001", ts=posted["ts"], text="finished", blocks=[new_block]
    )
    assert updated["ts"] == posted["ts"]
    assert updated["text"] == "finished"

    stored = fake.message("C0001", posted["ts"])
    assert stored is not None
    assert stored["text"] == "finished"
    assert stored["blocks"] == [new_block]
    assert [u["text"] for u in stored["updates"]] == ["finished"]

    # an update without blocks keeps the previous blocks, as Slack documents
    await client.chat_update(channel="C0001", ts=posted["ts"], text="again")
    stored = fake.message("C0001", posted["ts"])
    assert stored is not None and stored["blocks"] == [new_block]
    assert len(stored["updates"]) == 2

    with pytest.raises(SlackApiError) as exc:
        await client.chat_update(channel="C0001", ts="1700000000.000001", text="x")
    assert _error(exc) == "message_not_found"


async def test_replies_are_a_thread_oldest_first_kept_out_of_history(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    parent = await client.chat_postMessage(channel="C0001", text="card")
    reply = await client.chat_postMessage(
        channel="C0001", text="note", thread_ts=parent["ts"], metadata=METADATA
    )
    seeded = fake.add_message("C0001", "seeded", bot=True, thread_ts=parent["ts"])
    history = await client.conversations_history(channel="C0001")
    assert [m["ts"] for m in history["messages"]] == [parent["ts"]], "replies stay in threads"

    thread = await client.conversations_replies(
        channel="C0001", ts=parent["ts"], include_all_metadata=True
    )
    assert [m["ts"] for m in thread["messages"]] == [parent["ts"], reply["ts"], seeded["ts"]]
    assert thread["messages"][1]["metadata"] == METADATA
    assert thread["messages"][1]["thread_ts"] == parent["ts"]
    page = await client.conversations_replies(channel="C0001", ts=parent["ts"], limit=2)
    assert page["has_more"] is True and "metadata" not in page["messages"][1]
    with pytest.raises(SlackApiError) as exc:
        await client.conversations_replies(channel="C0001", ts="1.000001")
    assert _error(exc) == "thread_not_found"


async def test_history_is_newest_first_and_hides_metadata_unless_asked(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    human = fake.add_message("C0001", "hello", user="U0001")
    first = await client.chat_postMessage(channel="C0001", text="one", metadata=METADATA)
    second = await client.chat_postMessage(channel="C0001", text="two")

    plain = await client.conversations_history(channel="C0001")
    assert [m["ts"] for m in plain["messages"]] == [second["ts"], first["ts"], human["ts"]]
    assert all("metadata" not in m for m in plain["messages"])

    full = await client.conversations_history(channel="C0001", include_all_metadata=True)
    by_ts = {m["ts"]: m for m in full["messages"]}
    assert by_ts[first["ts"]]["metadata"] == METADATA
    assert "metadata" not in by_ts[second["ts"]]
    assert by_ts[first["ts"]]["bot_id"] == fake.bot_id
    assert "bot_id" not in by_ts[human["ts"]]

    page = await client.conversations_history(channel="C0001", limit=2)
    assert len(page["messages"]) == 2 and page["has_more"] is True
    cursor = page["response_metadata"]["next_cursor"]
    rest = await client.conversations_history(channel="C0001", limit=2, cursor=cursor)
    assert [m["ts"] for m in rest["messages"]] == [human["ts"]]
    assert rest["has_more"] is False

    newer = await client.conversations_history(channel="C0001", oldest=first["ts"])
    assert [m["ts"] for m in newer["messages"]] == [second["ts"]]
    inclusive = await client.conversations_history(
        channel="C0001", oldest=first["ts"], inclusive=True
    )
    assert [m["ts"] for m in inclusive["messages"]] == [second["ts"], first["ts"]]

    await client.chat_delete(channel="C0001", ts=second["ts"])
    after = await client.conversations_history(channel="C0001")
    assert second["ts"] not in [m["ts"] for m in after["messages"]]


async def test_conversations_info_reports_channel_flags(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    fake.add_channel("G0PRIV", name="secret", is_private=True, is_ext_shared=True, is_shared=True)
    info = (await client.conversations_info(channel="G0PRIV"))["channel"]
    assert info["id"] == "G0PRIV" and info["name"] == "secret"
    assert info["is_private"] is True and info["is_group"] is True
    assert info["is_channel"] is False and info["is_im"] is False
    assert info["is_ext_shared"] is True and info["is_shared"] is True
    assert info["is_member"] is True and info["is_archived"] is False

    auto = (await client.conversations_info(channel="C0AUTO"))["channel"]
    assert auto["is_channel"] is True and auto["is_private"] is False

    fake.add_channel("G0OUT", is_private=True, is_member=False)
    with pytest.raises(SlackApiError) as exc:
        await client.conversations_info(channel="G0OUT")
    assert _error(exc) == "channel_not_found"


async def test_conversations_members_pages_and_hides_private_channels_we_are_not_in(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    fake.add_channel("G0TEAM", is_private=True, members=["U1", "U2", "U3"])
    first = await client.conversations_members(channel="G0TEAM", limit=2)
    assert first["members"] == ["U1", "U2"]
    cursor = first["response_metadata"]["next_cursor"]
    rest = await client.conversations_members(channel="G0TEAM", limit=2, cursor=cursor)
    assert rest["members"] == ["U3", "U0BOT"] and rest["response_metadata"]["next_cursor"] == ""
    fake.add_channel("G0OUT", is_private=True, is_member=False, members=["U1"])
    for channel in ("G0OUT", "C0NEVER"):
        with pytest.raises(SlackApiError) as exc:
            await client.conversations_members(channel=channel)
        assert _error(exc) == "channel_not_found"


async def test_auth_test_names_the_enterprise_org_of_a_grid_workspace() -> None:
    with FakeSlack(enterprise_id="E0001") as grid:
        client = AsyncWebClient(token=grid.bot_token, base_url=grid.api_url, retry_handlers=[])
        resp = await client.auth_test()
        assert resp["team_id"] == "T0001" and resp["enterprise_id"] == "E0001"


def test_click_payload_carries_the_clickers_home_team() -> None:
    form = block_actions_form(action_id="a", response_url="u", user_team_id="T0PARTNER")
    payload = json.loads(form["payload"])
    assert payload["user"]["team_id"] == "T0PARTNER" and payload["team"]["id"] == "T0001"


async def test_channel_errors(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_channel("C0ARCH", is_archived=True)
    fake.add_channel("C0OUT", is_member=False)
    cases = {"C0ARCH": "is_archived", "C0OUT": "not_in_channel"}
    for channel, error in cases.items():
        with pytest.raises(SlackApiError) as exc:
            await client.chat_postMessage(channel=channel, text="hi")
        assert _error(exc) == error
        assert exc.value.response.status_code == 200

    fake.auto_channels = False
    with pytest.raises(SlackApiError) as exc:
        await client.chat_postMessage(channel="C0NONE", text="hi")
    assert _error(exc) == "channel_not_found"
    assert fake.messages() == []

    fake.update_channel("C0ARCH", is_archived=False)
    assert (await client.chat_postMessage(channel="C0ARCH", text="hi"))["ok"]


async def test_auth_errors(fake: FakeSlack) -> None:
    async def error_of(token: str, method: str = "auth.test") -> str:
        web_client = AsyncWebClient(token=token, base_url=fake.api_url)
        with pytest.raises(SlackApiError) as exc:
            await web_client.api_call(method)
        return _error(exc)

    assert await error_of("xoxb-wrong") == "invalid_auth"
    assert await error_of(fake.app_token) == "not_allowed_token_type"
    assert await error_of(fake.bot_token, "apps.connections.open") == "not_allowed_token_type"
    assert await error_of(fake.bot_token, "files.nonsense") == "unknown_method"

    fake.revoke_token()
    assert await error_of(fake.bot_token) == "token_revoked"
    assert await error_of(fake.bot_token, "chat.postMessage") == "token_revoked"
    fake.restore_token()
    ok = await AsyncWebClient(token=fake.bot_token, base_url=fake.api_url).auth_test()
    assert ok["ok"]


async def test_fail_injects_errors_per_method_channel_and_count(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    fake.fail("chat.postMessage", "account_inactive", channel="C0BAD", times=2)
    assert (await client.chat_postMessage(channel="C0OK", text="fine"))["ok"]
    for _ in range(2):
        with pytest.raises(SlackApiError) as exc:
            await client.chat_postMessage(channel="C0BAD", text="x")
        assert _error(exc) == "account_inactive"
    assert (await client.chat_postMessage(channel="C0BAD", text="third time"))["ok"]
    assert [c.ok for c in fake.calls_to("chat.postMessage")] == [True, False, False, True]


async def test_rate_limit_answers_429_and_slack_sdk_retries_after_it(fake: FakeSlack) -> None:
    bare = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url, retry_handlers=[])
    fake.rate_limit("chat.postMessage", retry_after=7)
    with pytest.raises(SlackApiError) as exc:
        await bare.chat_postMessage(channel="C0001", text="x")
    assert exc.value.response.status_code == 429
    assert exc.value.response.headers["Retry-After"] == "7"
    assert _error(exc) == "ratelimited"

    retrying = AsyncWebClient(
        token=fake.bot_token,
        base_url=fake.api_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    fake.clear()
    fake.rate_limit("chat.postMessage", retry_after=1)
    resp = await retrying.chat_postMessage(channel="C0001", text="after the wait")
    assert resp["ok"]
    first, second = fake.calls_to("chat.postMessage")
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 1.0
    assert [m["text"] for m in fake.messages("C0001")] == ["after the wait"]


async def test_server_errors_json_and_html(fake: FakeSlack) -> None:
    retrying = AsyncWebClient(
        token=fake.bot_token,
        base_url=fake.api_url,
        retry_handlers=[AsyncServerErrorRetryHandler(max_retry_count=1)],
    )
    fake.server_error("chat.postMessage", status=503)
    assert (await retrying.chat_postMessage(channel="C0001", text="x"))["ok"]
    assert [c.status for c in fake.calls_to("chat.postMessage")] == [503, 200]

    bare = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url, retry_handlers=[])
    fake.server_error("auth.test", status=502, html=True)
    with pytest.raises(SlackApiError) as exc:
        await bare.auth_test()
    assert exc.value.response.status_code == 502


async def test_delay_slows_one_method(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.set_delay("conversations.info", 0.3)
    start = time.monotonic()
    await client.auth_test()
    fast = time.monotonic() - start
    start = time.monotonic()
    await client.conversations_info(channel="C0001")
    slow = time.monotonic() - start
    assert slow >= 0.3 > fast


async def test_block_validation_like_slack(fake: FakeSlack, client: AsyncWebClient) -> None:
    too_many = [{"type": "divider"}] * 51
    with pytest.raises(SlackApiError) as exc:
        await client.chat_postMessage(channel="C0001", text="x", blocks=too_many)
    assert _error(exc) == "invalid_blocks"

    long_section = {"type": "section", "text": {"type": "mrkdwn", "text": "a" * 3001}}
    with pytest.raises(SlackApiError) as exc:
        await client.chat_postMessage(channel="C0001", text="x", blocks=[long_section])
    assert _error(exc) == "invalid_blocks"
    assert "/blocks/0/text/text" in exc.value.response["response_metadata"]["messages"][0]

    with pytest.raises(SlackApiError) as exc:
        await client.chat_postMessage(channel="C0001", text="a" * 40001)
    assert _error(exc) == "msg_too_long"
    assert fake.messages() == []

    ok_section = {"type": "section", "text": {"type": "mrkdwn", "text": "a" * 3000}}
    assert (await client.chat_postMessage(channel="C0001", text="x", blocks=[ok_section]))["ok"]


def test_validate_blocks_catches_ids_and_buttons() -> None:
    button = {"type": "button", "text": {"type": "plain_text", "text": "Go"}, "action_id": "a"}
    assert validate_blocks([{"type": "actions", "elements": [button]}]) == []
    assert validate_blocks([{"type": "actions", "elements": [button, button]}])
    assert validate_blocks([{"type": "divider", "block_id": "x"}] * 2)
    long_button = {**button, "text": {"type": "plain_text", "text": "b" * 76}}
    assert validate_blocks([{"type": "actions", "elements": [long_button]}])
    assert validate_blocks([{"type": "section", "text": {"type": "mrkdwn", "text": ""}}])
    assert validate_blocks([{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}])
    assert validate_blocks([{"type": "nonsense"}])
    assert validate_blocks("[]")


async def test_blocks_without_text_are_accepted_with_a_warning(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    with pytest.warns(UserWarning):  # slack_sdk warns client-side too
        resp = await client.chat_postMessage(channel="C0001", blocks=[SECTION])
    assert resp["ok"]
    assert resp["warning"] == "missing_text_in_blocks"
    assert resp["response_metadata"]["warnings"] == ["missing_text_in_blocks"]
    [warning] = fake.warnings
    assert (warning.method, warning.warning, warning.channel) == (
        "chat.postMessage",
        "missing_text_in_blocks",
        "C0001",
    )


async def test_ephemeral_views_and_extra_methods(fake: FakeSlack, client: AsyncWebClient) -> None:
    resp = await client.chat_postEphemeral(channel="C0001", user="U0001", text="only you")
    [ephemeral] = fake.ephemerals
    assert (ephemeral["user"], ephemeral["text"], ephemeral["ts"]) == (
        "U0001",
        "only you",
        resp["message_ts"],
    )
    assert fake.messages() == []

    view = {"type": "home", "blocks": [SECTION]}
    published = await client.views_publish(user_id="U0001", view=view)
    assert published["view"]["type"] == "home"
    assert fake.views[0]["view"] == view

    fake.register_method("chat.getPermalink", lambda body: {"permalink": f"p/{body['channel']}"})
    link = await client.chat_getPermalink(channel="C0001", message_ts="1.2")
    assert link["permalink"] == "p/C0001"


def test_form_encoded_bodies_are_parsed_including_json_fields(fake: FakeSlack) -> None:
    form = {
        "token": fake.bot_token,
        "channel": "C0001",
        "text": "from a form",
        "blocks": json.dumps([SECTION]),
        "metadata": json.dumps(METADATA),
    }
    resp = httpx.post(f"{fake.api_url}chat.postMessage", data=form, trust_env=False)
    assert resp.status_code == 200 and resp.json()["ok"]
    call = fake.calls_to("chat.postMessage")[0]
    assert call.body["blocks"] == [SECTION]
    assert call.body["metadata"] == METADATA
    assert call.token == fake.bot_token
    assert fake.messages("C0001")[0]["metadata"] == METADATA

    # a JSON body cannot carry the token: Slack reads it only from the header
    resp = httpx.post(f"{fake.api_url}auth.test", json={"token": fake.bot_token}, trust_env=False)
    assert resp.json() == {"ok": False, "error": "not_authed"}


def test_wait_for_polls_until_true_or_times_out(fake: FakeSlack) -> None:
    def post_later() -> None:
        time.sleep(0.1)
        httpx.post(
            f"{fake.api_url}chat.postMessage",
            data={"token": fake.bot_token, "channel": "C0001", "text": "late"},
            trust_env=False,
        )

    thread = threading.Thread(target=post_later)
    thread.start()
    found = fake.wait_for(lambda: fake.messages("C0001"), timeout=5)
    thread.join()
    assert found[0]["text"] == "late"
    with pytest.raises(TimeoutError):
        fake.wait_for(lambda: fake.calls_to("chat.update"), timeout=0.1)


# --------------------------------------------------------------------------- response_url


async def test_response_url_records_posts_and_allows_five_uses(fake: FakeSlack) -> None:
    url = fake.new_response_url()
    hook = AsyncWebhookClient(url)
    for i in range(5):
        resp = await hook.send(text=f"r{i}", response_type="ephemeral", replace_original=False)
        assert (resp.status_code, resp.body) == (200, "ok")
    sixth = await hook.send(text="r5")
    assert (sixth.status_code, sixth.body) == (404, "used_url")

    recorded = fake.responses(url)
    assert [r.body["text"] for r in recorded] == ["r0", "r1", "r2", "r3", "r4", "r5"]
    assert recorded[0].body["response_type"] == "ephemeral"
    assert recorded[0].body["replace_original"] is False
    assert [r.status for r in recorded] == [200] * 5 + [404]

    other = fake.new_response_url()
    fake.expire_response_url(other)
    expired = await AsyncWebhookClient(other).send(text="late")
    assert (expired.status_code, expired.body) == (404, "expired_url")
    bogus = await AsyncWebhookClient(f"{fake.base_url}/response/nope").send(text="x")
    assert bogus.status_code == 404
    assert fake.responses(other)[0].status == 404


async def test_response_url_validates_blocks_and_notes_missing_text(fake: FakeSlack) -> None:
    hook = AsyncWebhookClient(fake.new_response_url())
    bad = await hook.send(text="x", blocks=[{"type": "divider"}] * 51)
    assert (bad.status_code, bad.body) == (400, "invalid_blocks")
    assert fake.warnings == []
    good = await hook.send(blocks=[SECTION])
    assert good.status_code == 200
    assert [(w.method, w.warning) for w in fake.warnings] == [
        ("response_url", "missing_text_in_blocks")
    ]


# --------------------------------------------------------------------------- Socket Mode


async def _socket_client(fake: FakeSlack, ack_payload: dict[str, Any] | None) -> SocketModeClient:
    web_client = AsyncWebClient(base_url=fake.api_url)
    sm = SocketModeClient(app_token=fake.app_token, web_client=web_client, ping_interval=1)
    seen: list[dict[str, Any]] = []
    sm.message_listeners.append(lambda _c, message, _raw: _remember(seen, message))

    async def ack(client: Any, req: SocketModeRequest) -> None:
        seen.append({"request": req})
        await client.send_socket_mode_response(
            SocketModeResponse(envelope_id=req.envelope_id, payload=ack_payload)
        )

    sm.socket_mode_request_listeners.append(ack)
    sm.seen = seen  # type: ignore[attr-defined]
    await sm.connect()
    return sm


async def _remember(seen: list[dict[str, Any]], message: dict[str, Any]) -> None:
    seen.append(message)


async def test_socket_mode_hello_envelope_and_ack(fake: FakeSlack) -> None:
    sm = await _socket_client(fake, {"text": "looking up 1234..."})
    try:
        assert await fake.async_wait_for_socket_connection(timeout=5) == 1
        [open_call] = fake.calls_to("apps.connections.open")
        assert open_call.token == fake.app_token
        hello = await fake.async_wait_for(
            lambda: [m for m in sm.seen if m.get("type") == "hello"], timeout=5
        )
        assert hello[0]["num_connections"] == 1
        assert hello[0]["connection_info"] == {"app_id": "A0001"}

        payload = await fake.async_send_slash_command(text="1234", channel_id="C0042")
        assert payload == {"text": "looking up 1234..."}
        [ack] = fake.socket_acks
        assert ack.latency is not None and 0 <= ack.latency < 2
        assert ack.envelope["type"] == "slash_commands"
        assert ack.envelope["accepts_response_payload"] is True

        [req] = [m["request"] for m in sm.seen if "request" in m]
        assert req.type == "slash_commands"
        assert req.envelope_id == ack.envelope_id
        assert req.payload["text"] == "1234"
        assert req.payload["channel_id"] == "C0042"
        assert req.payload["command"] == "/asana-export"
        assert req.payload["response_url"].startswith(f"{fake.base_url}/response/")
        assert set(req.payload) == set(slash_command_form(text="", response_url="u"))

        click = fake.block_actions_payload(action_id="unwatch", value="1234")
        assert await fake.async_send_interactive(click) == {"text": "looking up 1234..."}
        assert fake.socket_acks[-1].envelope["type"] == "interactive"
        assert fake.socket_acks[-1].envelope["accepts_response_payload"] is False
    finally:
        await sm.close()
    await fake.async_wait_for(lambda: fake.socket_connections_count() == 0, timeout=5)


@pytest.mark.parametrize("close", [False, True])
async def test_socket_mode_disconnect_makes_the_client_reconnect(
    fake: FakeSlack, close: bool
) -> None:
    sm = await _socket_client(fake, None)
    raw: list[str] = []

    async def on_message(message: Any) -> None:
        raw.append(message.data)

    sm.on_message_listeners.append(on_message)
    try:
        await fake.async_wait_for_socket_connection(timeout=5)
        # Without closing, only the `disconnect` message itself can make the client move.
        assert await fake.async_disconnect_all("refresh_requested", close=close) == 1
        # (on CLOSE slack_sdk reconnects once more on its own: 2 or 3 connections in all)
        await fake.async_wait_for(lambda: fake.connections_opened >= 2, timeout=10)
        await fake.async_wait_for(lambda: fake.socket_connections_count() == 1, timeout=5)
        # A late third connection is counted once its websocket opens, after its API call.
        await fake.async_wait_for(
            lambda: len(fake.calls_to("apps.connections.open")) == fake.connections_opened,
            timeout=5,
        )
        received = [json.loads(data) for data in raw]
        [disconnect] = [m for m in received if m["type"] == "disconnect"]
        assert disconnect["reason"] == "refresh_requested"
        assert await fake.async_send_slash_command(text="after reconnect") == {}
    finally:
        await sm.close()


async def test_socket_mode_dropped_connection_is_replaced(fake: FakeSlack) -> None:
    sm = await _socket_client(fake, {"text": "back"})
    try:
        await fake.async_wait_for_socket_connection(timeout=5)
        assert await fake.async_drop_all_connections() == 1
        await fake.async_wait_for(lambda: fake.connections_opened >= 2, timeout=10)
        await fake.async_wait_for_socket_connection(timeout=5)
        assert await fake.async_send_slash_command(text="x") == {"text": "back"}
    finally:
        await sm.close()


async def test_socket_mode_round_robin_and_missing_ack(fake: FakeSlack) -> None:
    first = await _socket_client(fake, {"text": "one"})
    second = await _socket_client(fake, {"text": "two"})
    try:
        await fake.async_wait_for_socket_connection(timeout=5, count=2)
        answers = {
            (await fake.async_send_slash_command(text="a"))["text"],
            (await fake.async_send_slash_command(text="b"))["text"],
        }
        assert answers == {"one", "two"}  # each payload went to exactly one connection
    finally:
        await first.close()
        await second.close()

    mute = SocketModeClient(
        app_token=fake.app_token, web_client=AsyncWebClient(base_url=fake.api_url)
    )
    await mute.connect()
    try:
        await fake.async_wait_for_socket_connection(timeout=5)
        await fake.async_wait_for(lambda: fake.socket_connections_count() == 1, timeout=5)
        with pytest.raises(TimeoutError):
            await fake.async_send_slash_command(text="nobody acks", timeout=0.3)
        assert fake.socket_acks[-1].acked_at is None
    finally:
        await mute.close()


@pytest.fixture
def bot_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A loop in another thread, standing for the bot process (its own loop, not the test's)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def _bolt_app(fake: FakeSlack) -> AsyncApp:
    app = AsyncApp(
        client=AsyncWebClient(token=fake.bot_token, base_url=fake.api_url), signing_secret=SECRET
    )

    @app.command("/asana-export")
    async def command(ack: Any, respond: Any, command: dict[str, Any]) -> None:
        await ack(f"got {command['text']} from {command['user_id']}")
        await respond(text=f"export {command['text']} is pending")

    @app.action("unwatch")
    async def unwatch(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        await app.client.chat_postMessage(
            channel=body["channel"]["id"], text=f"unwatched {body['actions'][0]['value']}"
        )

    return app


def test_sync_api_with_bolt_socket_mode_in_another_thread(
    fake: FakeSlack, bot_loop: asyncio.AbstractEventLoop
) -> None:
    """The e2e shape: the bot's own loop elsewhere, the test thread using the sync API."""

    async def start_bolt() -> AsyncSocketModeHandler:
        handler = AsyncSocketModeHandler(_bolt_app(fake), fake.app_token)
        await handler.connect_async()
        return handler

    handler = asyncio.run_coroutine_threadsafe(start_bolt(), bot_loop).result(10)
    try:
        fake.wait_for_socket_connection(timeout=5)
        ack = fake.send_slash_command(text="1234", user_id="U0042", timeout=5)
        assert ack == {"text": "got 1234 from U0042"}  # Bolt's Socket Mode ack format
        assert fake.socket_acks[-1].latency is not None
        responses = fake.wait_for(lambda: fake.responses(), timeout=5)
        assert responses[0].body["text"] == "export 1234 is pending"
        assert responses[0].headers["Content-Type"].startswith("application/json")

        seeded = fake.add_message("C0001", "card", bot=True)
        click = fake.block_actions_payload(
            action_id="unwatch", value="1234", message=fake.wire_message("C0001", seeded["ts"])
        )
        assert fake.send_interactive(click) == {}
        texts = fake.wait_for(
            lambda: [m["text"] for m in fake.messages("C0001") if m["text"] != "card"], timeout=5
        )
        assert texts == ["unwatched 1234"]
    finally:
        asyncio.run_coroutine_threadsafe(handler.close_async(), bot_loop).result(10)


# --------------------------------------------------------------------------- signing


def test_sign_matches_slack_sdk_verifier() -> None:
    verifier = SignatureVerifier(SECRET)
    body = form_body(slash_command_form(text="1234 & more", response_url="http://x/r"))
    now = int(time.time())
    assert sign(body, SECRET, now) == verifier.generate_signature(timestamp=str(now), body=body)
    assert verifier.is_valid_request(body, signed_headers(body, secret=SECRET))
    forged = signed_headers(body, secret=SECRET, signature="v0=" + "0" * 64)
    assert not verifier.is_valid_request(body, forged)
    assert not verifier.is_valid_request(body, signed_headers(body, secret="other-secret"))
    stale = signed_headers(body, secret=SECRET, timestamp=now - 301)
    assert not verifier.is_valid_request(body, stale)
    assert b"text=1234+%26+more" in body


@pytest.fixture
def bolt_http_url(fake: FakeSlack, bot_loop: asyncio.AbstractEventLoop) -> Iterator[str]:
    """Bolt's own aiohttp server (HTTP mode, signature checks on) on 127.0.0.1, random port."""

    async def serve() -> web.AppRunner:
        runner = web.AppRunner(_bolt_app(fake).web_app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    runner = asyncio.run_coroutine_threadsafe(serve(), bot_loop).result(10)
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), bot_loop).result(10)


def test_signed_posts_pass_bolt_and_forged_or_stale_ones_do_not(
    fake: FakeSlack, bolt_http_url: str
) -> None:
    url = fake.new_response_url()
    good = post_slash_command(bolt_http_url, secret=SECRET, text="1234", response_url=url)
    assert (good.status, good.body_text) == (200, "got 1234 from U0001")  # text/plain ack
    assert 0 < good.elapsed < 3
    assert fake.wait_for(lambda: fake.responses(url))[0].body["text"] == "export 1234 is pending"

    body = form_body(slash_command_form(text="1234", response_url=fake.new_response_url()))
    forged = post_signed(bolt_http_url, body, secret=SECRET, signature="v0=" + "ab" * 32)
    assert forged.status == 401
    wrong_secret = post_signed(bolt_http_url, body, secret="not-the-secret")
    assert wrong_secret.status == 401
    stale = post_signed(bolt_http_url, body, secret=SECRET, timestamp=int(time.time()) - 600)
    assert stale.status == 401
    assert len(fake.responses()) == 1  # rejected requests never reached the listener

    clicked = post_block_actions(
        bolt_http_url,
        secret=SECRET,
        action_id="unwatch",
        value="1234",
        response_url=fake.new_response_url(),
    )
    assert clicked.status == 200
    messages = fake.wait_for(lambda: fake.messages("C0001"), timeout=5)
    assert messages[0]["text"] == "unwatched 1234"


async def test_async_post_signed_from_an_async_test(fake: FakeSlack, bolt_http_url: str) -> None:
    body = form_body(block_actions_form(action_id="unwatch", value="77", response_url="u"))
    clicked = await async_post_signed(bolt_http_url, body, secret=SECRET)
    assert clicked.status == 200
    messages = await fake.async_wait_for(lambda: fake.messages("C0001"), timeout=5)
    assert messages[0]["text"] == "unwatched 77"


async def test_delay_after_store_keeps_the_post_and_holds_only_its_answer(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    """The message exists (history shows it) before its poster hears back, as when a bot dies
    between Slack accepting a post and recording its ts; failed calls are never held."""
    fake.set_delay_after_store("chat.postMessage", float("inf"))
    metadata = {"event_type": "asana_export_finished", "event_payload": {"subscription_id": 7}}
    posting = asyncio.ensure_future(
        client.chat_postMessage(channel="C0001", text="ready", metadata=metadata)
    )
    (held,) = await fake.async_wait_for(lambda: fake.held_calls("chat.postMessage"), timeout=5)
    assert held.holding and not posting.done()
    assert held.peer is not None and held.peer[0] == "127.0.0.1"
    (stored,) = fake.messages("C0001")
    assert stored["metadata"] == metadata and held.call.response is not None
    assert held.call.response["ts"] == stored["ts"]
    history = await client.conversations_history(channel="C0001", include_all_metadata=True)
    assert [m["metadata"] for m in history["messages"]] == [metadata], "other calls answer"

    posting.cancel()  # the poster dies without reading the answer; the post stays
    with pytest.raises(asyncio.CancelledError):
        await posting
    assert fake.release_held() == 1 and fake.release_held() == 0
    await fake.async_wait_for(lambda: not held.holding, timeout=5)
    assert len(fake.messages("C0001")) == 1

    fake.add_channel("CARCH", is_archived=True)
    with pytest.raises(SlackApiError):
        await client.chat_postMessage(channel="CARCH", text="no")  # nothing stored, not held
    assert len(fake.held_calls()) == 1

    fake.set_delay_after_store("chat.postMessage", 0.3)
    started = time.monotonic()
    answer = await client.chat_postMessage(channel="C0001", text="later")
    assert time.monotonic() - started >= 0.3
    assert answer["ts"] == fake.messages("C0001")[-1]["ts"]
    fake.set_delay_after_store("chat.postMessage", 0)
    started = time.monotonic()
    await client.chat_postMessage(channel="C0001", text="at once")
    assert time.monotonic() - started < 0.3 and len(fake.held_calls()) == 2

    # One held call can be answered while others stay held.
    fake.set_delay_after_store("chat.postMessage", float("inf"))
    posts = [
        asyncio.ensure_future(client.chat_postMessage(channel="C0001", text=text))
        for text in ("one", "two")
    ]
    await fake.async_wait_for(lambda: len([h for h in fake.held_calls() if h.holding]) == 2)
    held = [h for h in fake.held_calls() if h.holding]
    assert fake.release_held([held[0]]) == 1
    done, _ = await asyncio.wait(posts, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1 and not held[0].holding and held[1].holding
    fake.clear_faults()  # ends holding new calls; the held one stays held until released
    assert fake.release_held() == 1
    await asyncio.wait_for(asyncio.gather(*posts), 5)


# ------------------------------------------------------------------------------ App Home


async def test_views_hold_a_hundred_blocks_and_modals_need_a_trigger_id(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    home = {"type": "home", "blocks": [{"type": "divider"}] * 100}
    await client.views_publish(user_id="U0001", view=home)
    with pytest.raises(SlackApiError) as too_many:
        await client.views_publish(user_id="U0001", view={**home, "blocks": home["blocks"] * 2})
    assert _error(too_many) == "invalid_blocks"
    assert fake.home_of("U0001") == {**home, "id": fake.views[0]["id"]}
    assert fake.home_of("U0002") is None

    modal = {"type": "modal", "title": {"type": "plain_text", "text": "New"}, "blocks": [SECTION]}
    with pytest.raises(SlackApiError) as no_trigger:
        await client.views_open(trigger_id="", view=modal)
    assert _error(no_trigger) == "invalid_trigger_id"
    long_title = {**modal, "title": {"type": "plain_text", "text": "x" * 25}}
    with pytest.raises(SlackApiError) as too_long:
        await client.views_open(trigger_id="1.2.abc", view=long_title)
    assert _error(too_long) == "invalid_blocks"
    opened = await client.views_open(trigger_id="1.2.abc", view=modal)
    [recorded] = fake.modals
    assert recorded["id"] == opened["view"]["id"] and recorded["trigger_id"] == "1.2.abc"
    values = {"b": {"a": {"type": "plain_text_input", "value": "42"}}}
    submission = fake.view_submission_payload(values, user_id="U0001")
    assert submission["type"] == "view_submission"
    assert submission["view"]["id"] == opened["view"]["id"]
    assert submission["view"]["state"] == {"values": values}


async def test_app_home_events_and_home_clicks_over_socket_mode(fake: FakeSlack) -> None:
    sm = await _socket_client(fake, None)
    try:
        await fake.async_wait_for_socket_connection(timeout=5)
        opened = fake.app_home_opened_payload("U0001")
        assert opened["type"] == "event_callback" and opened["team_id"] == fake.team_id
        assert opened["event"]["type"] == "app_home_opened" and opened["event"]["tab"] == "home"
        ack = await fake.async_send_event(opened)
        assert ack.envelope["type"] == "events_api" and ack.latency is not None
        assert ack.envelope["accepts_response_payload"] is False

        click = fake.home_click_payload("U0001", action_id="home_refresh")
        assert click["container"]["type"] == "view" and "response_url" not in click
        assert "channel" not in click and click["view"]["type"] == "home"
        await fake.async_send_interactive(click)
        kinds = [r["request"].type for r in sm.seen if "request" in r]
        assert kinds == ["events_api", "interactive"]
    finally:
        await sm.close()
