"""The fault matrix (issue 4, items 4-6), end to end against the fake Asana and fake Slack.

The Asana and Slack faults run in process (`Scenario`: the real runtime, Bolt app and watcher,
ticked with an injected clock; several faults per bot, on different gids or channels, wherever
they cannot interfere). What needs a real process runs one: a Slack wait longer than the
notification grace (the scheduler's own recovery racing the post), a PostgreSQL restart and a
locked SQLite file under a running bot. What is asserted is what a user or an operator would
notice: the bot stays up and healthy, nothing is lost (every watch ends with exactly one finished
post once the fault is gone), waits the servers ask for are honoured (measured from the fakes'
request logs), the user is told plainly, and permanent errors are recorded and never retried
forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import shutil
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bot.asana import AsanaClient, AsanaServerError
from bot.demo.fake_asana import FakeAsana, RecordedRequest
from bot.demo.fake_slack import FakeSlack, RecordedCall
from bot.demo.signing import post_slash_command
from bot.testing import (
    FAST_WATCH,
    FINISHED_EVENT,
    SIGNING_SECRET,
    BotProcess,
    async_wait_until,
    wait_until,
)
from bot.testing import finished_posts as finished_posts
from bot.testing.scenario import Scenario
from bot.testing.slack_view import AUDIT_EVENT, event_posts
from tests.conftest import ASANA_TOKEN, StartScenario, _sync_url

FAST = {
    **FAST_WATCH,
    # A dozen exports polled every second: keep the request budget out of the way.
    "POLL_BUDGET_PER_MINUTE": "6000",
    # A dozen lookups at once by one user: keep fair use (tests/test_e2e_fair_use.py) away too.
    "USER_REQUESTS_PER_MINUTE": "1000",
    "LINK_POLICY": "anywhere",  # these tests are about faults; tests/test_security.py: policy
}
#: One Asana request's timeout: a "hang" is any delay longer than this.
ASANA_TIMEOUT = 1.0
PHRASE = "6 sad squid snuggle softly"
#: Requests sent at the same moment arrive at the fake within this of each other.
SAME_BURST = 0.25
STRANGER_GID = "1299999999999999"  # the gid a confused Asana answers about
#: Slack requests that a token error may cause in ~10 s: a pause, not a retry loop.
TOKEN_ERROR_MAX_CALLS = 3
TOKEN_ERROR_WINDOW = 10.0
PG_CLUSTER = ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main"]


# ---------------------------------------------------------------------------------- helpers


def ask(bot: BotProcess, slack: FakeSlack, text: str, channel: str = "C0001") -> dict[str, Any]:
    """Send `/asana-export text` as Slack does; return what the user finally sees.

    That is the ack, or, when the bot acked "Looking up..." in time, its respond() later.
    """
    response_url = slack.new_response_url()
    response = post_slash_command(
        bot.events_url,
        secret=SIGNING_SECRET,
        text=text,
        channel_id=channel,
        response_url=response_url,
    )
    assert response.status == 200, response.body_text
    assert response.elapsed < 3.0, f"ack took {response.elapsed:.2f}s"
    ack = json.loads(response.body_text)
    if "Looking up" not in ack.get("text", ""):
        return ack
    slack.wait_for(lambda: slack.responses(response_url), timeout=30)
    return slack.responses(response_url)[-1].body


async def ask_in(bot: Scenario, slack: FakeSlack, text: str, channel: str = "C0001") -> dict:
    """`ask` for a bot in process: the ack, or the answer that follows "Looking up..."."""
    response_url = slack.new_response_url()
    response = await bot.slash(text, channel_id=channel, response_url=response_url)
    assert response.status == 200, response.body_text
    assert response.elapsed < 3.0, f"ack took {response.elapsed:.2f}s"
    ack = json.loads(response.body_text)
    if "Looking up" not in ack.get("text", ""):
        return ack
    await async_wait_until(lambda: slack.responses(response_url), timeout=30)
    return slack.responses(response_url)[-1].body


def text_of(body: dict[str, Any]) -> str:
    return str(body.get("text", "")) + json.dumps(body.get("blocks") or [])


def posts_to(slack: FakeSlack, channel: str) -> list[RecordedCall]:
    """Every chat.postMessage attempt to `channel`, failed ones included (audit lines left out)."""
    return [
        c
        for c in slack.calls_to("chat.postMessage")
        if c.body.get("channel") == channel
        and (c.body.get("metadata") or {}).get("event_type") != AUDIT_EVENT
    ]


def gets(asana: FakeAsana, gid: str | None = None) -> list[RecordedRequest]:
    return [r for r in asana.requests if r.method == "GET" and (gid is None or r.gid == gid)]


def quiet(asana: FakeAsana, start: float, end: float) -> list[RecordedRequest]:
    """Requests on the token that arrived in (start, end): must be none inside a Retry-After."""
    return [r for r in asana.requests if start < r.at < end]


def healthy(bot: BotProcess) -> bool:
    assert bot.proc is not None and bot.proc.poll() is None, "the bot process exited"
    return httpx.get(bot.health_url, timeout=2).status_code == 200


def sqlite_subscription(db: Path, channel: str) -> dict[str, Any]:
    """The newest subscription row of `channel`, read straight from the bot's SQLite file."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute(
            "SELECT * FROM subscriptions WHERE channel_id = ? ORDER BY id DESC LIMIT 1", (channel,)
        ).fetchone()
    assert row is not None, f"no subscription row for {channel}"
    return dict(row)


def sqlite_export_gids(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        return {gid for (gid,) in conn.execute("SELECT gid FROM exports")}


def wait_posted(slack: FakeSlack, channels: list[str], timeout: float = 20) -> None:
    wait_until(
        lambda: all(finished_posts(slack, c) for c in channels),
        timeout,
        f"a finished post in each of {channels}",
    )


def assert_one_finished_post_each(
    slack: FakeSlack, channels: list[str], told: Callable[[str], Any]
) -> None:
    """Once every channel's post is recorded as told (nothing can post it again), exactly one
    post per channel. `told(channel)` reads the channel's subscription from the database."""
    wait_posted(slack, channels)
    wait_until(lambda: all(told(c) for c in channels), 15, f"posts recorded in {channels}")
    counts = {c: len(finished_posts(slack, c)) for c in channels}
    assert counts == dict.fromkeys(channels, 1), counts


#: Real seconds between ticks in process: the fault scenarios poll about as often as a bot
#: process with TICK_SECONDS=0.2 would, not as fast as the loop can go.
PACE = 0.1
#: Ticks (each a poll interval later, with a recovery pass) in which a duplicate would show.
SETTLE_TICKS = 5


async def run_posted(bot: Scenario, slack: FakeSlack, channels: list[str], within: float = 20):
    await bot.run_until(
        lambda: all(finished_posts(slack, c) for c in channels),
        timeout=within,
        pause=PACE,
        what=f"a finished post in each of {channels}",
    )


async def assert_one_finished_post_each_in(
    bot: Scenario, slack: FakeSlack, channels: list[str]
) -> None:
    """After further ticks and recoveries, in which any duplicate would come, one post each."""
    await run_posted(bot, slack, channels)
    await bot.ticks(SETTLE_TICKS)
    await bot.settle()
    counts = {c: len(finished_posts(slack, c)) for c in channels}
    assert counts == dict.fromkeys(channels, 1), counts


# ------------------------------------------------------------------------- Asana, watching

#: fault name -> (FakeAsana.fail arguments, the problem kind the watcher must log for it).
#: times=2 everywhere: a background poll makes 2 attempts, so one whole poll fails.
WATCH_FAULTS: dict[str, tuple[dict[str, Any], str]] = {
    "500+phrase": ({"status": 500, "phrase": PHRASE}, "asana_down"),
    "502": ({"status": 502}, "asana_down"),
    "503": ({"status": 503}, "asana_down"),
    "504": ({"status": 504}, "asana_down"),
    # Longer than ASANA_TIMEOUT_SECONDS: the 500 behind the delay is never seen.
    "hang": ({"delay": 3 * ASANA_TIMEOUT}, "timeout"),
    "reset": ({"reset": True}, "connection"),
    "malformed JSON": ({"malformed": True}, "malformed"),
    "no data": ({"missing_data": True}, "malformed"),
    "wrong gid": ({"wrong_gid": STRANGER_GID}, "malformed"),
}


async def _two_429s(bot: Scenario, asana: FakeAsana, gid: str, hold: float) -> tuple[float, float]:
    """Wait for a gid's two 429s and check that no request used the token within `hold`,
    while the bot goes on ticking."""
    limited = await bot.run_until(
        lambda: (found := [r for r in gets(asana, gid) if r.status == 429])[1:] and found,
        timeout=15,
        pause=PACE,
        what=f"two 429s for {gid}",
    )
    first, second = limited[0].at, limited[1].at
    await bot.run_until(  # let the hold pass, polling as usual
        lambda: time.monotonic() >= second + hold + 0.3, timeout=hold + 5, pause=PACE
    )
    assert second - first >= hold, f"retried {second - first:.2f}s after a {hold}s hold"
    # Requests sent together with a 429'd one (same tick, or waiting on the same token hold)
    # may land just after it; nothing sent after the 429 arrived may.
    assert quiet(asana, first + SAME_BURST, first + hold) == [], "Retry-After within the poll"
    assert quiet(asana, second + SAME_BURST, second + hold) == [], "then for every poll"
    return second - first, min(r.at for r in asana.requests if r.at > second + SAME_BURST) - second


async def test_asana_faults_while_watching_lose_no_watch(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario, tmp_path: Path
) -> None:
    bot = await start_scenario(**FAST, ASANA_TIMEOUT_SECONDS=str(ASANA_TIMEOUT))
    cases = [*WATCH_FAULTS, "429+Retry-After", "429 bare", "unknown state"]
    gid = {name: f"12000000000010{i:02d}" for i, name in enumerate(cases)}
    channel = {name: f"CW{i:02d}" for i, name in enumerate(cases)}
    for name in cases:
        fake_asana.set_export(gid[name], "pending", organization_name=f"Org {name}")
        assert "Watching" in (await ask_in(bot, fake_slack, gid[name], channel[name]))["text"]
    await bot.run_until(
        lambda: all(len(gets(fake_asana, g)) >= 2 for g in gid.values()), pause=PACE
    )

    # 429 with Retry-After: honoured inside the poll, then for every poll on the token.
    fake_asana.fail(429, gid=gid["429+Retry-After"], retry_after=2, times=2)
    in_call, after = await _two_429s(bot, fake_asana, gid["429+Retry-After"], 2.0)
    print(f"429 Retry-After 2: retried after {in_call:.2f}s, token idle {after:.2f}s")
    # 429 without Retry-After (a proxy stripped it): the token is still held a while.
    fake_asana.fail(429, gid=gid["429 bare"], times=2)
    in_call, after = await _two_429s(bot, fake_asana, gid["429 bare"], 1.0)
    print(f"429 bare: retried after {in_call:.2f}s, token idle {after:.2f}s")

    # The other faults at once, each on its own export.
    started = time.monotonic()
    for name, (fault, _) in WATCH_FAULTS.items():
        fake_asana.fail(gid=gid[name], times=2, **fault)
    await bot.run_until(
        lambda: fake_asana.pending_faults() == 0, timeout=20, pause=PACE, what="every fault"
    )
    for name, (_, kind) in WATCH_FAULTS.items():
        line = f"poll of export {gid[name]} failed ({kind})"
        await bot.run_until(lambda line=line: line in bot.logs(), pause=PACE, what=line)
        await bot.run_until(
            lambda g=gid[name]: (
                [r for r in gets(fake_asana, g) if r.at > started][-1].status == 200
            ),
            pause=PACE,
            what=f"{name}: a good poll after the fault",
        )
    db = tmp_path / "bot.db"
    assert STRANGER_GID not in sqlite_export_gids(db), "a wrong-gid body was not stored"

    # An unknown state is shown on the card, and polling goes on.
    fake_asana.set_state(gid["unknown state"], "on_fire")
    await bot.run_until(
        lambda: [
            c
            for c in fake_slack.calls_to("chat.update")
            if c.body.get("channel") == channel["unknown state"] and "on_fire" in text_of(c.body)
        ],
        pause=PACE,
        what="the card shows the unknown state",
    )
    shown = time.monotonic()
    await bot.run_until(
        lambda: len([r for r in gets(fake_asana, gid["unknown state"]) if r.at > shown]) >= 2,
        pause=PACE,
        what="polling continues in an unknown state",
    )

    for name in cases:
        fake_asana.set_state(gid[name], "finished")
    await assert_one_finished_post_each_in(bot, fake_slack, [channel[n] for n in cases])
    assert bot.tracebacks == [], bot.logs()[-4000:]


async def test_asana_500_phrase_reaches_the_log(
    fake_asana: FakeAsana, caplog: pytest.LogCaptureFixture
) -> None:
    """In process (the client logs the same way inside the bot): an operator reporting a
    500 to Asana needs its phrase, and the log is the only place it could be."""
    caplog.set_level(logging.DEBUG, logger="bot")
    fake_asana.set_export("1200000000001999", "pending")
    fake_asana.fail(500, gid="1200000000001999", phrase=PHRASE, times=5)
    async with AsanaClient(ASANA_TOKEN, fake_asana.base_url, max_retry_time=0.5) as client:
        with pytest.raises(AsanaServerError):
            await client.get_export("1200000000001999")
    assert PHRASE in caplog.text


# -------------------------------------------------------------------------- Asana, lookups

#: (name, FakeAsana.fail arguments, what the answer must say). The fault outlasts every retry.
#: The two 429s come last: they hold the whole token for a second.
LOOKUP_FAULTS: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("401", {"status": 401}, ("token is invalid or revoked", "ASANA_TOKEN")),
    ("402", {"status": 402}, ("Enterprise", "ASANA_TOKEN")),
    ("403", {"status": 403}, ("no access", "ASANA_TOKEN")),
    ("404", {"status": 404}, ("No export with gid", "Check the gid")),
    ("500+phrase", {"status": 500, "phrase": PHRASE}, ("server error", "Try again")),
    ("502", {"status": 502}, ("server error", "Try again")),
    ("503", {"status": 503}, ("server error", "Try again")),
    ("504", {"status": 504}, ("server error", "Try again")),
    ("hang", {"delay": 3 * ASANA_TIMEOUT}, ("did not answer", "Try again")),
    ("reset", {"reset": True}, ("could not connect", "Try again")),
    ("malformed JSON", {"malformed": True}, ("could not understand", "Try again")),
    ("no data", {"missing_data": True}, ("could not understand", "Try again")),
    ("wrong gid", {"wrong_gid": STRANGER_GID}, ("could not understand", "Try again")),
    ("429 bare", {"status": 429}, ("rate limiting", "Try again")),
    ("429+Retry-After", {"status": 429, "retry_after": 1}, ("rate limiting", "Try again")),
]
#: Not retried within a call: asking again gets the same answer (malformed ones included).
PERMANENT = {"401", "402", "403", "404", "malformed JSON", "no data", "wrong gid"}


async def test_asana_faults_on_lookup_are_explained(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario
) -> None:
    # A short retry budget (answers come in seconds) that still fits a retry after a timeout.
    bot = await start_scenario(
        ASANA_TIMEOUT_SECONDS=str(ASANA_TIMEOUT),
        ASANA_MAX_RETRY_SECONDS=str(2.5 * ASANA_TIMEOUT),
        POLL_BUDGET_PER_MINUTE=FAST["POLL_BUDGET_PER_MINUTE"],
        USER_REQUESTS_PER_MINUTE=FAST["USER_REQUESTS_PER_MINUTE"],
    )
    gids = {name: f"12000000000020{i:02d}" for i, (name, _, _) in enumerate(LOOKUP_FAULTS)}
    channels = {name: f"CL{i:02d}" for i, (name, _, _) in enumerate(LOOKUP_FAULTS)}

    async def look_up(name: str, fault: dict[str, Any]) -> dict[str, Any]:
        fake_asana.set_export(gids[name], "pending")
        fake_asana.fail(gid=gids[name], times=20, **fault)
        return await ask_in(bot, fake_slack, gids[name], channels[name])

    answers: dict[str, dict[str, Any]] = {}
    # Each fault on its own export, all at once (each ack must still beat Slack's 3 s); the
    # 429s hold the whole token, so they come last, each after the previous hold.
    at_once = [(n, f) for n, f, _ in LOOKUP_FAULTS if not n.startswith("429")]
    replies = await asyncio.gather(*(look_up(*case) for case in at_once))
    answers.update(zip([n for n, _ in at_once], replies, strict=True))
    for name, fault, _ in LOOKUP_FAULTS:
        if name == "429+Retry-After":
            # The hold after the bare 429 passes first.
            held_until = time.monotonic() + bot.runtime.asana.gate.remaining()
            await async_wait_until(lambda t=held_until: time.monotonic() >= t, timeout=5)
        if name.startswith("429"):
            answers[name] = await look_up(name, fault)
    fake_asana.clear_faults()

    for name, _, _ in LOOKUP_FAULTS:
        requests = gets(fake_asana, gids[name])
        if name in PERMANENT:
            assert len(requests) == 1, f"{name}: a permanent error is not retried"
        else:
            assert len(requests) >= 2, f"{name}: a transient error is retried"
        if name.startswith("429"):
            gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
            assert min(gaps) >= 1.0, f"{name}: the token held for 1 s: {gaps}"

    for name, _, says in LOOKUP_FAULTS:
        answer = answers[name]
        assert answer["response_type"] == "ephemeral", name
        shown = text_of(answer)
        for fragment in says:
            assert fragment.lower() in shown.lower(), f"{name}: {fragment!r} in {shown}"
        assert "Watching" not in answer["text"], f"{name}: nothing is watched"
        assert posts_to(fake_slack, channels[name]) == [], f"{name}: no card in the channel"

    # An unknown state is no error: the export is watched and the card shows the state.
    fake_asana.set_export("1200000000002999", "on_fire")
    answer = await ask_in(bot, fake_slack, "1200000000002999", "CLUNK")
    assert "Watching" in answer["text"] and "on_fire" in text_of(answer)
    (card,) = posts_to(fake_slack, "CLUNK")
    assert "on_fire" in text_of(card.body)
    assert bot.tracebacks == [], bot.logs()[-4000:]


# ---------------------------------------------------------------------------- Slack faults


async def test_slack_faults_at_subscribe_and_notification(
    fake_asana: FakeAsana, fake_slack: FakeSlack, start_scenario: StartScenario, tmp_path: Path
) -> None:
    db = tmp_path / "bot.db"
    names = ["429", "5xx", "502", "channel_not_found", "is_archived", "msg_too_long"]
    names += ["invalid_blocks"]
    gid = {name: f"12000000000030{i:02d}" for i, name in enumerate(names)}
    channel = {name: f"CS{i:02d}" for i, name in enumerate(names)}
    # A notification claim outlives any Slack wait here (see the test after this one).
    bot = await start_scenario(**{**FAST, "NOTIFY_GRACE_SECONDS": "8"})
    # not_in_channel when subscribing: told how to invite the bot, nothing watched.
    fake_slack.add_channel("CNOPE", is_member=False)
    fake_asana.set_export("1200000000003999", "pending")
    answer = await ask_in(bot, fake_slack, "1200000000003999", "CNOPE")
    assert answer["response_type"] == "ephemeral" and "/invite" in text_of(answer)
    assert sqlite_subscription(db, "CNOPE")["end_reason"] == "slack_not_in_channel"
    assert "1200000000003999" not in text_of(await ask_in(bot, fake_slack, "list", "CNOPE"))

    for name in names:
        fake_asana.set_export(gid[name], "pending")
        assert "Watching" in (await ask_in(bot, fake_slack, gid[name], channel[name]))["text"]
    await bot.settle()  # the watches' audit lines are out: the faults below are for the posts

    # Channel-specific faults on the finished post, all at once.
    for name in ("channel_not_found", "is_archived"):
        fake_slack.fail("chat.postMessage", name, times=None, channel=channel[name])
    for name in ("msg_too_long", "invalid_blocks"):
        fake_slack.fail("chat.postMessage", name, channel=channel[name])
    for name in ("channel_not_found", "is_archived", "msg_too_long", "invalid_blocks"):
        fake_asana.set_state(gid[name], "finished")
    for name in ("channel_not_found", "is_archived"):
        await bot.run_until(
            lambda c=channel[name]: sqlite_subscription(db, c)["ended_at"],
            pause=PACE,
            what=f"{name} ends",
        )
        assert sqlite_subscription(db, channel[name])["end_reason"] == f"slack_{name}"
    await run_posted(bot, fake_slack, [channel["msg_too_long"], channel["invalid_blocks"]])

    # 429 ratelimited with Retry-After: slack_sdk waits it out, then posts.
    fake_slack.rate_limit("chat.postMessage", retry_after=2)
    fake_asana.set_state(gid["429"], "finished")
    await run_posted(bot, fake_slack, [channel["429"]])
    limited, posted = posts_to(fake_slack, channel["429"])[1:3]
    assert limited.status == 429 and posted.ok
    assert posted.at - limited.at >= 2.0, f"retried after {posted.at - limited.at:.2f}s"

    # 500 then 503 (the SDK retries both), and a 502 with an HTML body (the SDK does not).
    fake_slack.server_error("chat.postMessage", 500)
    fake_slack.server_error("chat.postMessage", 503)
    fake_asana.set_state(gid["5xx"], "finished")
    await run_posted(bot, fake_slack, [channel["5xx"]])
    fake_slack.server_error("chat.postMessage", 502, html=True)
    fake_asana.set_state(gid["502"], "finished")

    posted_to = [channel[n] for n in ("429", "5xx", "502", "msg_too_long", "invalid_blocks")]
    await assert_one_finished_post_each_in(bot, fake_slack, posted_to)  # no dead channel retried
    for name in ("channel_not_found", "is_archived"):
        attempts = [
            c.response and c.response.get("error") for c in posts_to(fake_slack, channel[name])
        ]
        assert attempts[1:] == [name], f"{name}: one notification attempt, never retried"
    for name in ("msg_too_long", "invalid_blocks"):
        refused, fallback = posts_to(fake_slack, channel[name])[1:]
        assert refused.response and refused.response.get("error") == name
        assert fallback.ok and not fallback.body.get("blocks")
        assert gid[name] in fallback.body["text"] and "ready" in fallback.body["text"]
        assert fallback.body["metadata"]["event_type"] == FINISHED_EVENT
        print(f"{name}: plain-text fallback posted: {fallback.body['text']!r}")
    assert [c.status for c in posts_to(fake_slack, channel["5xx"])[1:]] == [500, 503, 200]
    # The 502 is left to the bot: the claim is given back and recovery posts once.
    assert [c.status for c in posts_to(fake_slack, channel["502"])[1:]] == [502, 200]

    assert bot.tracebacks == [], bot.logs()[-4000:]


def test_slack_wait_longer_than_notify_grace_still_posts_once(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot_env: dict[str, str], tmp_path: Path
) -> None:
    bot = BotProcess(tmp_path, {**bot_env, **FAST}).start()  # NOTIFY_GRACE_SECONDS=2
    try:
        fake_asana.set_export("1200000000003500", "pending")
        assert "Watching" in ask(bot, fake_slack, "1200000000003500", "CSLOW")["text"]
        # The watch's audit line goes out after the ack: the 429 is for the finished post.
        wait_until(lambda: event_posts(fake_slack, AUDIT_EVENT, "CSLOW"), 10, "the audit line")
        fake_slack.rate_limit("chat.postMessage", retry_after=3)
        fake_asana.set_state("1200000000003500", "finished")
        wait_posted(fake_slack, ["CSLOW"])
        limited = wait_until(
            lambda: next((c for c in posts_to(fake_slack, "CSLOW") if c.status == 429), None),
            10,
            "the rate-limited post",
        )
        db = tmp_path / "bot.db"
        wait_until(lambda: sqlite_subscription(db, "CSLOW")["notified_ts"], 10, "post recorded")
        # Any second post would come when the SDK's wait (3 s + up to 1 s of jitter) ends.
        sdk_done = limited.at + 3.0 + 1.0 + 0.3
        wait_until(lambda: time.monotonic() >= sdk_done, 10, "the SDK's wait is over")
        assert len(finished_posts(fake_slack, "CSLOW")) == 1, [
            (c.status, c.at) for c in posts_to(fake_slack, "CSLOW")
        ]
        assert "Traceback" not in bot.logs()
    finally:
        code = bot.stop()
    assert code == 0


TOKEN_ERRORS = ("invalid_auth", "token_revoked", "account_inactive")


async def test_slack_token_errors_are_not_retried_forever(
    fake_asana: FakeAsana, tmp_path: Path
) -> None:
    """One fake workspace and one bot per token error (a token error stops all posting).

    TOKEN_ERROR_WINDOW of the bot's time passes as the scheduler would spend it: a tick every
    TICK_SECONDS, each followed by a recovery pass.
    """
    tick = float(FAST["TICK_SECONDS"])
    window_ticks = round(TOKEN_ERROR_WINDOW / tick)

    async def case(index: int, error: str, slack: FakeSlack) -> int:
        gid = f"12000000000040{index:02d}"
        db = tmp_path / f"{error}.db"
        async with Scenario.open(fake_asana, slack, f"sqlite:///{db}", **FAST) as bot:
            fake_asana.set_export(gid, "pending")
            assert "Watching" in (await ask_in(bot, slack, gid, "CTOK"))["text"]
            if error == "token_revoked":
                slack.revoke_token()  # every method, as after an uninstall
            else:
                slack.fail("*", error, times=None)
            fake_asana.set_state(gid, "finished")  # card update, then the link post

            def first_refusal() -> float:
                return next((c.at for c in slack.calls if c.response and not c.ok), 0.0)

            start = await bot.run_until(first_refusal, pause=PACE, what=f"{error} seen")
            await bot.ticks(window_ticks, step=tick)
            calls = [c for c in slack.calls if c.at >= start]
            sub = sqlite_subscription(db, "CTOK")
            print(
                f"{error}: {len(calls)} Slack call(s) in {TOKEN_ERROR_WINDOW:.0f}s"
                f" {sorted({c.method for c in calls})}; subscription ended_at={sub['ended_at']}"
                f" end_reason={sub['end_reason']} notified_at={sub['notified_at']}"
            )
            await bot.health()  # the bot still answers its health check
            # Not silently dropped: still waiting to be told, or ended with the reason recorded.
            assert sub["notified_ts"] is None
            assert sub["ended_at"] is None or error in (sub["end_reason"] or ""), sub
            assert error in bot.logs(), f"{error}: the operator is told in the log"
            assert bot.tracebacks == [], error

        # The fix for a dead token is a new token and a restart: the watch is then told once.
        slack.restore_token()
        slack.clear_faults()
        async with Scenario.open(fake_asana, slack, f"sqlite:///{db}", **FAST) as again:
            await run_posted(again, slack, ["CTOK"])
            await again.ticks(SETTLE_TICKS)
            assert len(finished_posts(slack, "CTOK")) == 1, error
        return len(calls)

    with contextlib.ExitStack() as stack:
        slack = {error: stack.enter_context(FakeSlack()) for error in TOKEN_ERRORS}
        counts = await asyncio.gather(
            *(case(i, error, slack[error]) for i, error in enumerate(TOKEN_ERRORS))
        )
    attempts = dict(zip(TOKEN_ERRORS, counts, strict=True))
    assert all(n <= TOKEN_ERROR_MAX_CALLS for n in attempts.values()), (
        f"Slack calls in {TOKEN_ERROR_WINDOW:.0f}s after a token error: {attempts}"
    )


# ---------------------------------------------------------------------------- the database


def _postgres_ready() -> bool:
    done = subprocess.run(
        ["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-t", "2"],
        capture_output=True,
        check=False,
        timeout=10,
    )
    return done.returncode == 0


def _ensure_postgres_up() -> None:
    """Whatever happened, leave PostgreSQL running for everyone else."""
    if _postgres_ready():
        return
    subprocess.run([*PG_CLUSTER, "start"], capture_output=True, check=False, timeout=60)
    wait_until(_postgres_ready, 30, "PostgreSQL up again")


def _pg_subscriptions(url: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM subscriptions ORDER BY id"))
            return [dict(r._mapping) for r in rows]
    finally:
        engine.dispose()


@pytest.fixture
def restartable_postgres_url(postgres_url: str) -> Iterator[str]:
    """A throwaway database, administered without pooling, so a server restart cannot leave
    the fixture holding a dead connection (conftest's `fresh_postgres_url` would)."""
    name = f"aeb_faults_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(
        _sync_url(postgres_url), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        url = sa.make_url(_sync_url(postgres_url)).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        _ensure_postgres_up()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_postgres_restart_under_a_running_bot(
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    bot_env: dict[str, str],
    tmp_path: Path,
    restartable_postgres_url: str,
) -> None:
    if shutil.which(PG_CLUSTER[0]) is None:
        pytest.skip("pg_ctlcluster is not installed: cannot restart the local PostgreSQL")
    env = {**bot_env, **FAST, "DATABASE_URL": restartable_postgres_url, "LEASE_SECONDS": "5"}
    bot = BotProcess(tmp_path, env).start()
    try:
        fake_asana.set_export("1200000000005001", "pending")
        assert "Watching" in ask(bot, fake_slack, "1200000000005001", "CPG1")["text"]
        wait_until(lambda: len(gets(fake_asana, "1200000000005001")) >= 2, 10, "a poll")
        try:
            subprocess.run([*PG_CLUSTER, "restart"], capture_output=True, check=True, timeout=60)
        finally:
            _ensure_postgres_up()
        restarted = time.monotonic()
        wait_until(
            lambda: [r for r in gets(fake_asana, "1200000000005001") if r.at > restarted],
            15,
            "polling resumes after the restart",
        )
        # A command right after: the pool's dead connections are replaced, not used.
        fake_asana.set_export("1200000000005002", "pending")
        assert "Watching" in ask(bot, fake_slack, "1200000000005002", "CPG2")["text"]
        fake_asana.set_state("1200000000005001", "finished")
        fake_asana.set_state("1200000000005002", "finished")
        assert_one_finished_post_each(
            fake_slack,
            ["CPG1", "CPG2"],
            lambda c: any(
                s["channel_id"] == c and s["notified_ts"]
                for s in _pg_subscriptions(restartable_postgres_url)
            ),
        )
        subs = _pg_subscriptions(restartable_postgres_url)
        assert [(s["channel_id"], s["end_reason"]) for s in subs] == [
            ("CPG1", "finished"),
            ("CPG2", "finished"),
        ]
        assert healthy(bot)
        logs = bot.logs()
        print(
            f"after the restart: {logs.count('tick failed')} failed tick(s),"
            f" {logs.count('Traceback')} traceback(s) in the log"
        )
    finally:
        _ensure_postgres_up()
        code = bot.stop()
    assert code == 0


def _hold_write_lock(db: Path, seconds: float, held: threading.Event, times: list[float]) -> None:
    """Another process's writer: BEGIN IMMEDIATE on the bot's file, held for `seconds`."""
    with contextlib.closing(sqlite3.connect(db, timeout=10, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        times.append(time.monotonic())
        held.set()
        time.sleep(seconds)
        conn.execute("ROLLBACK")
        times.append(time.monotonic())


def test_sqlite_busy_while_ticking_and_answering(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot_env: dict[str, str], tmp_path: Path
) -> None:
    db = tmp_path / "bot.db"
    bot = BotProcess(tmp_path, {**bot_env, **FAST}).start()
    try:
        fake_asana.set_export("1200000000006001", "pending")
        assert "Watching" in ask(bot, fake_slack, "1200000000006001", "CSQ1")["text"]
        wait_until(lambda: len(gets(fake_asana, "1200000000006001")) >= 2, 10, "a poll")

        held, times = threading.Event(), []
        holder = threading.Thread(target=_hold_write_lock, args=(db, 3.5, held, times))
        holder.start()
        try:
            assert held.wait(15), "took the write lock"
            fake_asana.set_state("1200000000006001", "finished")  # the next tick must write
            fake_asana.set_export("1200000000006002", "pending")
            answer = ask(bot, fake_slack, "1200000000006002", "CSQ2")  # must write too
        finally:
            holder.join(15)
        assert "Watching" in answer["text"], answer
        locked, released = times
        (post,) = wait_until(lambda: finished_posts(fake_slack, "CSQ1"), 15, "CSQ1 told")
        post_call = next(c for c in fake_slack.calls_to("chat.postMessage") if c.body is post)
        assert post_call.at >= released - 0.05, "the tick waited for the lock, it did not skip"

        fake_asana.set_state("1200000000006002", "finished")
        assert_one_finished_post_each(
            fake_slack, ["CSQ1", "CSQ2"], lambda c: sqlite_subscription(db, c)["notified_ts"]
        )
        assert healthy(bot)
        logs = bot.logs()
        print(
            f"lock held {released - locked:.1f}s: {logs.count('tick failed')} failed tick(s),"
            f" {logs.count('Traceback')} traceback(s)"
        )
        assert "Traceback" not in logs
    finally:
        code = bot.stop()
    assert code == 0
