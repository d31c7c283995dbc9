"""GET /metrics on the real `asana-export-bot run`: scraped before and after things happen.

A lookup, a failed lookup, a watch, a few ticks, a finished notification, a Slack error and a
person over their limit each move the counters and histograms they should, parsed with
prometheus-client's own parser; no label carries a gid, a channel or a user.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.testing.process import FAST_WATCH, BotProcess
from tests.test_faults import ask, text_of, wait_until

P = "asana_export_bot"
DONE, MISSING, WATCHED, LOST = (
    "1200000000000901",
    "1200000000000902",
    "1200000000000903",
    "1200000000000904",
)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(bot: BotProcess) -> Samples:
    """Every sample of /metrics, by (name, sorted labels)."""
    assert bot.proc is not None and bot.proc.poll() is None, "the bot process exited"
    response = httpx.get(f"http://127.0.0.1:{bot.port}/metrics", timeout=3)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((f"{P}_{name}", tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_metrics_move_as_the_bot_works(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot_env: dict[str, str], tmp_path: Path
) -> None:
    fake_asana.set_export(DONE, "finished")
    fake_asana.set_export(WATCHED, "pending")
    fake_asana.set_export(LOST, "pending")
    env = {**bot_env, **FAST_WATCH, "LINK_POLICY": "anywhere", "USER_REQUESTS_PER_MINUTE": "4"}
    bot = BotProcess(tmp_path, env).start()
    try:
        start = scrape(bot)
        assert value(start, "active_watches") == 0
        assert value(start, "budget_tokens") >= 1, "the polling budget is full at start"
        assert value(start, "slack_api_calls_total", method="auth.test", error="ok") >= 1

        # A lookup of a finished export, and one Asana does not know.
        assert "finished" in text_of(ask(bot, fake_slack, DONE, channel="C1")).lower()
        fake_asana.fail(404, gid=MISSING)
        ask(bot, fake_slack, MISSING, channel="C1")
        looked = scrape(bot)
        assert moved(start, looked, "asana_requests_total", outcome="ok") >= 1
        assert moved(start, looked, "asana_requests_total", outcome="not_found") == 1
        assert moved(start, looked, "asana_request_seconds_count") == (
            moved(start, looked, "asana_requests_total", outcome="ok")
            + moved(start, looked, "asana_requests_total", outcome="not_found")
        ), "one latency observation per request"
        assert moved(start, looked, "command_ack_seconds_count") == 2
        assert value(looked, "command_ack_seconds_bucket", le="3.0") == value(
            looked, "command_ack_seconds_count"
        ), "every ack within Slack's 3 s"

        # Two watches: one will finish, the other's channel will refuse the notification.
        assert "Watching" in text_of(ask(bot, fake_slack, WATCHED, channel="C1"))
        assert "Watching" in text_of(ask(bot, fake_slack, LOST, channel="C2"))
        watching = wait_until(
            lambda: (s := scrape(bot)) and value(s, "active_watches") == 2 and s,
            5,
            "two active watches counted at scrape time",
        )
        assert (
            moved(start, watching, "slack_api_calls_total", method="chat.postMessage", error="ok")
            >= 2
        )

        # A few ticks, and polls that find the exports still pending.
        ticked = wait_until(
            lambda: (
                (s := scrape(bot))
                and moved(watching, s, "ticks_total", result="ok") >= 3
                and moved(watching, s, "polls_total", outcome="continue") >= 2
                and s
            ),
            15,
            "three ticks and two polls",
        )
        assert moved(watching, ticked, "tick_seconds_count") >= 3

        # The user is over USER_REQUESTS_PER_MINUTE now: deferred, Asana not asked.
        asked = len(fake_asana.requests)
        refused = ask(bot, fake_slack, DONE, channel="C1")
        assert refused["response_type"] == "ephemeral", refused
        over = scrape(bot)
        assert moved(ticked, over, "requests_deferred_total", kind="user") == 1
        assert not [r for r in fake_asana.requests[asked:] if r.gid == DONE]

        # One notification posted, one refused by Slack (the bot left the channel).
        fake_slack.fail("chat.postMessage", "not_in_channel", channel="C2", times=None)
        fake_asana.set_state(WATCHED, "finished")
        fake_asana.set_state(LOST, "finished")
        done = wait_until(
            lambda: (
                (s := scrape(bot))
                and moved(over, s, "notifications_total", outcome="posted") == 1
                and moved(over, s, "notifications_total", outcome="channel") == 1
                and value(s, "active_watches") == 0
                and s
            ),
            20,
            "a posted notification, a refused one, no active watch left",
        )
        assert moved(over, done, "polls_total", outcome="finished") == 2
        assert (
            moved(
                over,
                done,
                "slack_api_calls_total",
                method="chat.postMessage",
                error="not_in_channel",
            )
            >= 1
        )

        # Bounded labels: no gid, channel or user anywhere.
        values = {v for (_, labels) in done for (_, v) in labels}
        for secret in (DONE, MISSING, WATCHED, LOST, "C1", "C2", "U0001"):
            assert not [v for v in values if secret in v], secret
    finally:
        bot.stop()
    assert "Traceback" not in bot.logs()
