"""Hostile input: whatever people type or forge, the bot answers sanely.

Over HTTP the bot runs in process (`Scenario`: signed requests dispatched into the real Bolt app),
one per test, so the hypothesis examples of a test reuse it. Over Socket Mode one real bot process
serves the module (starting one takes seconds). Every slash command gets, inside Slack's 3
seconds, HTTP 200 with a well-formed reply that escapes whatever it echoes; every button click is
acked; the bot never crashes and never logs a traceback. Asana and Slack are fakes on 127.0.0.1;
nothing is patched.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.command_parser import Invalid, parse_command
from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack, validate_blocks
from bot.demo.signing import SignedResponse, form_body, interactive_form
from bot.testing import BotProcess, async_wait_until, bot_environment
from bot.testing.scenario import Scenario
from tests.conftest import ASANA_TOKEN

#: What Slack's 3-second ack deadline leaves us, measured at the client.
ACK_BUDGET = 3.0
#: The caller's ids in every request: the only mentions the bot may write itself.
CALLER_USER = "U0001"
CALLER_CHANNEL = "C0001"

MENTIONS = [
    "<@U123>",
    "<@U123|bob>",
    "<@W0ABC>",
    "<#C1|x>",
    "<#C999>",
    "<!here>",
    "<!channel>",
    "<!everyone>",
    "<!subteam^S123|@team>",
    "<!date^1392734382^{date}|x>",
    "<https://evil.example|click>",
    "<mailto:a@example.com|mail>",
]
MRKDWN = ["*bold*", "_it_", "~gone~", "`code`", "```\nblock\n```", "> quote", "&", "&amp;", "&lt;"]
SQL = ["'; DROP TABLE exports; --", '" OR 1=1 --', "1; DELETE FROM subscriptions", "%", "\\"]
CONTROL = ["\x00", "\x01", "\x07", "\x1b[31m", "\x7f", "\x85", "\u2028", "\r\n", "\t", "\v"]
INVISIBLE = ["\u200b", "\u200d", "\u200e", "\u200f", "\u202e", "\u2066", "\ufeff", "\u00ad"]
EMOJI = ["🎉", "👨‍👩‍👧‍👦", "🏳️‍🌈", ":tada:", "🇺🇸"]
NUMBERS = ["1234567890", "0", "9" * 30, "9" * 31, "١٢٣٤", "１２３", "-1", "1e9", "`1234`", "'12'"]
FRAGMENTS = MENTIONS + MRKDWN + SQL + CONTROL + INVISIBLE + EMOJI + NUMBERS
VERBS = ["", "watch", "unwatch", "list", "list all", "help", "WATCH", "?", "--help"]

_fragment = st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12))
_composed = st.builds(
    lambda verb, parts, sep: f"{verb} {sep.join(parts)}",
    st.sampled_from(VERBS),
    st.lists(_fragment, max_size=6),
    st.sampled_from([" ", "", "\n", "\u3000", "\t"]),
)
_huge = st.one_of(st.sampled_from(FRAGMENTS), st.text(min_size=1, max_size=5)).map(
    lambda s: (s * 10_000)[:10_000]
)
_blank = st.text(alphabet=" \t\n\r\u00a0\u2003\u3000\u200b\ufeff", max_size=50)
COMMAND_TEXT = st.one_of(st.text(max_size=300), _composed, _huge, _blank)

#: The hostile texts the issue names, also sent through Socket Mode.
NAMED_TEXTS = [
    "'; DROP TABLE exports; --",
    "x" * 10_000,
    "<!here> <!channel> <@U123> <#C1|x>",
    "*bold* _it_ ~s~ `code` > quote",
    "\x00",
    "\u202e1234\u200f",
    "🎉" * 50,
    " \t\n ",
    "watch <@U123>",
    "watch '; DROP TABLE exports; --",
    "unwatch",
    "list whatever",
]


# --------------------------------------------------------------------------- module fixtures


def _env(asana: FakeAsana, slack: FakeSlack, workdir: Path) -> dict[str, str]:
    return bot_environment(
        asana, slack, f"sqlite:///{workdir / 'bot.db'}", ASANA_MAX_RETRY_SECONDS="2"
    )


@pytest.fixture(scope="module")
def asana() -> Iterator[FakeAsana]:
    """No exports at all: every gid the hostile input names is a 404, answered at once."""
    with FakeAsana(token=ASANA_TOKEN) as fake:
        yield fake


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
async def bot(asana: FakeAsana, slack: FakeSlack, tmp_path: Path) -> AsyncIterator[Scenario]:
    """The bot in process over HTTP; no traceback may be logged while it runs."""
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    async with Scenario.open(asana, slack, url, ASANA_MAX_RETRY_SECONDS="2") as scenario:
        yield scenario
        assert scenario.tracebacks == [], scenario.logs()[-4000:]


@pytest.fixture(scope="module")
def sock_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture(scope="module")
def sock_bot(
    asana: FakeAsana, sock_slack: FakeSlack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BotProcess]:
    workdir = tmp_path_factory.mktemp("bad-input-socket")
    env = {
        **_env(asana, sock_slack, workdir),
        "SLACK_APP_TOKEN": sock_slack.app_token,
        "SLACK_SIGNING_SECRET": "",
    }
    proc = BotProcess(workdir, env, name="socket-bot").start()
    try:
        sock_slack.wait_for_socket_connection(timeout=10)
        yield proc
    finally:
        proc.stop()


# --------------------------------------------------------------------------- checks


def log_mark(bot: BotProcess) -> int:
    """Where the bot's log ends now; `new_log` reads what came after."""
    return bot.log_path.stat().st_size if bot.log_path.exists() else 0


def new_log(bot: BotProcess, since: int) -> str:
    return bot.log_path.read_bytes()[since:].decode("utf-8", "replace")


def assert_no_traceback(bot: Scenario) -> None:
    assert bot.tracebacks == [], bot.logs()[-4000:]


def assert_survived(bot: BotProcess, since: int) -> None:
    """Alive, healthy, and nothing since `since` was a crash."""
    assert bot.proc is not None and bot.proc.poll() is None, "the bot process died"
    assert httpx.get(bot.health_url, timeout=2.0).status_code == 200
    logged = new_log(bot, since)
    assert "Traceback" not in logged, logged[-4000:]


def strings_in(value: Any) -> Iterator[str]:
    """Every string anywhere inside a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


_OWN_MENTIONS = re.compile(rf"<@{CALLER_USER}>|<#{CALLER_CHANNEL}>")
_STRAY_AMPERSAND = re.compile(r"&(?!amp;|lt;|gt;)")


def assert_escaped(message: dict[str, Any]) -> None:
    """No `<...>` markup (mentions, links, `<!here>`) and no raw `&` except what the bot made."""
    for text in strings_in(message):
        rest = _OWN_MENTIONS.sub("", text)
        assert "<" not in rest and ">" not in rest, f"unescaped markup in {text!r}"
        assert not _STRAY_AMPERSAND.search(text), f"unescaped & in {text!r}"


def assert_well_formed(message: Any) -> None:
    """What Slack accepts: non-empty fallback text and valid blocks; escaped throughout."""
    assert isinstance(message, dict), message
    text = message.get("text")
    assert isinstance(text, str) and text.strip(), f"empty fallback text in {message}"
    assert len(text) <= 40_000
    if message.get("blocks") is not None:
        assert validate_blocks(message["blocks"]) == [], message["blocks"]
    assert message.get("response_type") in (None, "ephemeral", "in_channel"), message
    assert_escaped(message)


def assert_command_reply(message: Any, text: str) -> None:
    assert_well_formed(message)
    if isinstance(parse_command(text), Invalid):
        assert message["response_type"] == "ephemeral", "errors are shown to the caller only"


def assert_private_answer(body: Any) -> None:
    """A response_url answer to a click: only the clicker sees it; the card stays as it was."""
    assert_well_formed(body)
    assert body.get("response_type") == "ephemeral", body
    assert body.get("replace_original") is not True, body
    assert body.get("delete_original") is not True, body


async def command(bot: Scenario, text: str) -> SignedResponse:
    return await bot.slash(text, user_id=CALLER_USER, channel_id=CALLER_CHANNEL)


async def click(bot: Scenario, payload: dict[str, Any]) -> SignedResponse:
    return await bot.signed(form_body(interactive_form(payload)))


#: One bot serves every example of a hypothesis test, as one process did for the module.
ONE_BOT_PER_TEST = [HealthCheck.function_scoped_fixture]


# --------------------------------------------------------------------------- slash commands


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, *ONE_BOT_PER_TEST],
)
@given(text=COMMAND_TEXT)
@example(text="'; DROP TABLE exports; --")
@example(text="x" * 10_000)
@example(text="<!here> <@U123> <#C1|x> <!channel>")
@example(text="\x00\x00")
@example(text="\u202e\u200f1234")
@example(text="🎉👨‍👩‍👧‍👦")
@example(text="   \t ")
@example(text="watch <@U123>")
@example(text="watch <https://evil.example|x> 12")
@example(text="unwatch")
@example(text="list whatever")
@example(text="list <!channel>")
async def test_any_command_text_gets_a_prompt_well_formed_reply(bot: Scenario, text: str) -> None:
    response = await command(bot, text)
    assert response.status == 200, response.body_text
    assert response.elapsed < ACK_BUDGET, f"acked after {response.elapsed:.2f}s"
    assert response.headers["content-type"].startswith("application/json")
    assert_command_reply(response.json(), text)
    assert_no_traceback(bot)


async def test_bot_survived_the_commands(bot: Scenario, slack: FakeSlack) -> None:
    for text in NAMED_TEXTS:
        response = await command(bot, text)
        assert response.status == 200 and response.elapsed < ACK_BUDGET, text
        assert_command_reply(response.json(), text)
    await bot.settle()  # anything still to answer late (respond) is in by now
    for late in slack.responses():
        assert_well_formed(late.body)
    assert_no_traceback(bot)


def test_socket_mode_commands(sock_bot: BotProcess, sock_slack: FakeSlack) -> None:
    since = log_mark(sock_bot)
    for text in NAMED_TEXTS:
        answer = sock_slack.send_slash_command(
            text=text, user_id=CALLER_USER, channel_id=CALLER_CHANNEL, timeout=ACK_BUDGET
        )
        latency = sock_slack.socket_acks[-1].latency
        assert latency is not None and latency < ACK_BUDGET, text
        assert_command_reply(answer, text)
    assert_survived(sock_bot, since)


# --------------------------------------------------------------------------- button clicks

MISSING = object()

_values = st.one_of(
    st.just(MISSING),
    st.none(),
    st.just(""),
    st.text(max_size=60),
    st.from_regex(r"[0-9]{1,60}", fullmatch=True),
    st.sampled_from(FRAGMENTS),
    st.just("9" * 2000),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
_action_ids = st.one_of(
    st.sampled_from(["fresh_link", "download_link", "unwatch", "zzz", "", "x" * 255]),
    st.text(max_size=40),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, *ONE_BOT_PER_TEST],
)
@given(action_id=_action_ids, value=_values)
@example(action_id="fresh_link", value=MISSING)
@example(action_id="fresh_link", value="")
@example(action_id="fresh_link", value="9" * 2000)
@example(action_id="fresh_link", value="<!channel>")
@example(action_id="fresh_link", value=1200000000000001)
@example(action_id="fresh_link", value=None)
@example(action_id="no_such_button", value="1")
async def test_any_click_is_acked_and_answered_privately(
    bot: Scenario, slack: FakeSlack, action_id: str, value: Any
) -> None:
    response_url = slack.new_response_url()
    payload = slack.block_actions_payload(action_id=action_id, response_url=response_url)
    if value is not MISSING:
        payload["actions"][0]["value"] = value
    response = await click(bot, payload)
    assert response.status == 200, response.body_text
    assert response.elapsed < ACK_BUDGET
    if action_id == "fresh_link":  # the one button that answers, always via response_url
        await async_wait_until(lambda: slack.responses(response_url), timeout=5)
    await bot.settle()
    for answer in slack.responses(response_url):
        assert answer.status == 200, answer.answer
        assert_private_answer(answer.body)
    assert_no_traceback(bot)


def _drop(*path: str | int) -> Callable[[dict[str, Any]], None]:
    def mutate(payload: dict[str, Any]) -> None:
        target: Any = payload
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _put(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda payload: payload.__setitem__(key, value)


def _put_in_action(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda payload: payload["actions"][0].__setitem__(key, value)


#: (id, mutation of a well-formed fresh_link click)
MALFORMED_CLICKS: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("no-user", _drop("user")),
    ("no-team", _drop("team")),
    ("no-channel", _drop("channel")),
    ("no-container", _drop("container")),
    ("no-message", _drop("message")),
    ("no-trigger-id", _drop("trigger_id")),
    ("user-is-a-string", _put("user", "U0001")),
    ("block-id-huge", _put_in_action("block_id", "b" * 5000)),
    ("no-actions", _drop("actions")),
    ("actions-empty", _put("actions", [])),
    ("actions-object", _put("actions", {"action_id": "fresh_link", "value": "1"})),
    ("actions-string", _put("actions", "fresh_link")),
    ("action-string", _put("actions", ["fresh_link"])),
    ("action-null", _put("actions", [None])),
    ("action-id-number", _put_in_action("action_id", 7)),
    ("action-id-missing", _drop("actions", 0, "action_id")),
    ("no-response-url", _drop("response_url")),
]


#: Socket Mode gets a few representatives: a click that is never acked costs the full 3 s.
SOCKET_CASES = {"no-user", "no-message", "no-actions", "no-response-url"}


def _cases(only: set[str] | None = None) -> list[Any]:
    return [
        pytest.param(mutate, id=name)
        for name, mutate in MALFORMED_CLICKS
        if only is None or name in only
    ]


@pytest.mark.parametrize("mutate", _cases())
async def test_malformed_click_is_acked_without_a_crash(
    bot: Scenario, slack: FakeSlack, mutate: Callable[[dict[str, Any]], None]
) -> None:
    response_url = slack.new_response_url()
    payload = slack.block_actions_payload(
        action_id="fresh_link", value="1200000000000009", response_url=response_url
    )
    mutate(payload)
    response = await click(bot, payload)
    await bot.settle()  # a listener failing after the ack has logged by now
    assert response.status == 200, response.body_text
    assert response.elapsed < ACK_BUDGET, f"acked after {response.elapsed:.2f}s"
    for answer in slack.responses(response_url):
        assert_private_answer(answer.body)
    assert_no_traceback(bot)


async def test_click_with_an_expired_response_url_is_still_acked(
    bot: Scenario, slack: FakeSlack
) -> None:
    response_url = slack.new_response_url()
    slack.expire_response_url(response_url)
    payload = slack.block_actions_payload(
        action_id="fresh_link", value="1200000000000009", response_url=response_url
    )
    response = await click(bot, payload)
    assert response.status == 200 and response.elapsed < ACK_BUDGET
    await async_wait_until(lambda: slack.responses(response_url), timeout=5)
    assert slack.responses(response_url)[0].answer == "expired_url"
    await bot.settle()
    assert_no_traceback(bot)


@pytest.mark.parametrize("mutate", _cases(SOCKET_CASES))
def test_socket_mode_malformed_click_is_acked(
    sock_bot: BotProcess, sock_slack: FakeSlack, mutate: Callable[[dict[str, Any]], None]
) -> None:
    since = log_mark(sock_bot)
    payload = sock_slack.block_actions_payload(action_id="fresh_link", value="1200000000000009")
    mutate(payload)
    sock_slack.send_interactive(payload, timeout=ACK_BUDGET)  # raises TimeoutError if never acked
    latency = sock_slack.socket_acks[-1].latency
    assert latency is not None and latency < ACK_BUDGET, f"acked after {latency}s"
    time.sleep(0.2)
    assert_survived(sock_bot, since)


def test_socket_mode_hostile_click_values(sock_bot: BotProcess, sock_slack: FakeSlack) -> None:
    since = log_mark(sock_bot)
    for value in ["", "<!channel>", "9" * 2000, "'; DROP TABLE exports; --", "\x00", "12 34"]:
        response_url = sock_slack.new_response_url()
        payload = sock_slack.block_actions_payload(
            action_id="fresh_link", value=value, response_url=response_url
        )
        sock_slack.send_interactive(payload, timeout=ACK_BUDGET)
        sock_slack.wait_for(lambda url=response_url: sock_slack.responses(url), timeout=5)
        (answer,) = sock_slack.responses(response_url)
        assert_private_answer(answer.body)
        assert "no valid export gid" in answer.body["text"]
    assert_survived(sock_bot, since)
