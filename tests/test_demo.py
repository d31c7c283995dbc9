"""`asana-export-bot demo`, run as a new user runs it: no settings, no credentials, 127.0.0.1 only.

The demo is the real console script; it runs the real bot as its own subprocess against the fakes
it starts in its own process. These tests read only what it prints, as a person would.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from bot.demo import story
from bot.demo.screen import Screen
from bot.demo.signing import post_slash_command
from bot.demo.slack_text import buttons, card_state, message_lines, mrkdwn_to_text
from bot.testing import console_script, wait_until

#: The issue's bounds: the whole demo in under a minute; --fast "shortens the phases".
DEMO_SECONDS = 60.0
_URL = re.compile(r"http://127\.0\.0\.1:(\d+)")


def clean_environment(**extra: str) -> dict[str, str]:
    """The user's environment without any of the bot's settings or forced colours."""
    dropped = ("SLACK_", "ASANA_", "DATABASE_URL", "FORCE_COLOR", "PORT", "LOG_", "TICK_", "POLL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(extra)
    return env


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def in_order(text: str, *needles: str) -> list[int]:
    """Positions of `needles`, each searched after the previous one; fails naming the missing one."""
    positions, start = [], 0
    for needle in needles:
        found = text.find(needle, start)
        assert found >= 0, f"{needle!r} missing (or out of order) in:\n{text}"
        positions.append(found)
        start = found + len(needle)
    return positions


def test_demo_fast_tells_the_whole_story_and_leaves_nothing(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    started = time.monotonic()
    done = subprocess.run(
        [console_script(), "demo", "--fast"],
        cwd=cwd,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=DEMO_SECONDS + 30,
    )
    elapsed = time.monotonic() - started
    out = done.stdout
    assert done.returncode == 0, f"{done.stderr}\n{out}"
    assert elapsed < DEMO_SECONDS, elapsed
    assert "\x1b" not in out + done.stderr, "escape codes on a stdout that is not a terminal"
    in_order(
        out,
        "@alex types `/asana-export 1208000000000042`",
        "the bot's answer to /asana-export 1208000000000042",
        "Watching export",
        "the bot posts a status card -> pending",
        "Fake Asana: export 1208000000000042 is now started",
        "the bot edits its status card -> started",
        "Fake Asana: export 1208000000000042 is now finished",
        "the bot edits its status card -> finished",
        "the bot posts\n",
        "is ready.",
        "Download export (http://127.0.0.1:",
        "[Get a fresh link]",
        "Opening the link: HTTP 200",
        "@alex presses [Get a fresh link]",
        "answers via response_url",
        "Fresh download link for export `1208000000000042`",
        "That is the whole story",
    )
    assert "xoxb-demo-not-a-real-token" not in out  # links are shown; tokens are not
    assert list(cwd.iterdir()) == [], "the demo left files in the working directory"
    workdir = re.search(r"SQLite in (\S+/asana-export-bot-demo-\S+)/", out)
    assert workdir, out
    assert not Path(workdir.group(1)).exists(), "the demo left its temporary directory"
    ports = {int(p) for p in _URL.findall(out)}
    assert len(ports) >= 4, out  # fake Asana, fake Slack, the downloads, the bot
    assert [p for p in ports if listening(p)] == [], "something still listens after the demo"


def test_demo_keep_takes_commands_by_hand_until_sigterm(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # The user's own settings must not leak into the demo's bot: a .env that would refuse to start
    # and a LINK_POLICY that would keep the link out of the channel.
    (cwd / ".env").write_text("SLACK_BOT_TOKEN=not-a-bot-token\nLINK_POLICY=nonsense\n")
    log = tmp_path / "demo.out"
    with log.open("w") as sink:
        demo = subprocess.Popen(
            [console_script(), "demo", "--fast", "--keep"],
            cwd=cwd,
            env=clean_environment(LINK_POLICY="button"),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:

        def said_ready() -> re.Match[str] | None:
            assert demo.poll() is None, f"the demo exited early:\n{log.read_text()}"
            return re.search(
                r"Ready: the bot keeps running at (\S+/slack/events) \(signing secret: (\S+)\)",
                log.read_text(),
            )

        ready = wait_until(said_ready, DEMO_SECONDS, "the demo says it is ready")
        events_url, secret = ready.group(1), ready.group(2)
        out = log.read_text()
        assert "Download export (http://127.0.0.1:" in out, "the user's LINK_POLICY leaked in"

        answer = post_slash_command(
            events_url,
            secret=secret,
            text="help",
            response_url="http://127.0.0.1:9/unused",
            channel_id="C0DEMO0001",
        )
        assert answer.status == 200, answer.body_text
        assert "/asana-export" in answer.body_text

        if shutil.which("curl") and shutil.which("openssl"):
            snippet = out[out.index("text='help'") :]
            snippet = snippet[: snippet.index("; echo") + len("; echo")]
            by_hand = subprocess.run(
                ["bash", "-c", snippet], capture_output=True, text=True, timeout=20
            )
            assert "Asana export bot" in by_hand.stdout, by_hand

        demo.send_signal(signal.SIGTERM)
        assert demo.wait(30) == 0, log.read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(5)
    out = log.read_text()
    assert "Stopping the bot" in out
    port = int(events_url.rsplit(":", 1)[1].split("/")[0])
    assert not listening(port), "the bot still listens after the demo stopped"
    assert sorted(p.name for p in cwd.iterdir()) == [".env"]


# ------------------------------------------------------------------ Block Kit as the screen shows it


def test_mrkdwn_reads_like_slack_shows_it() -> None:
    text = "<@U1> :white_check_mark: *Ready*: <https://x.test/a?b=1&amp;c=2|Download> &lt;b&gt;"
    assert mrkdwn_to_text(text, {"U1": "alex"}) == (
        "@alex ✅ Ready: Download (https://x.test/a?b=1&c=2) <b>"
    )


def test_a_card_is_read_as_lines_with_its_state_and_buttons() -> None:
    body = {
        "text": "fallback",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "Export"}},
            {
                "type": "section",
                "fields": [{"type": "mrkdwn", "text": "*State*\n:gear: started"}],
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Download export"},
                        "url": "http://127.0.0.1:1/e",
                    },
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Get a fresh link"},
                        "value": "1",
                    },
                ],
            },
            {"type": "divider"},
        ],
    }
    assert card_state(body) == "started"
    assert message_lines(body) == [
        "EXPORT",
        "State: ⚙️ started",
        "[Download export] -> http://127.0.0.1:1/e   [Get a fresh link]",
    ]
    assert [b["text"]["text"] for b in buttons(body)] == ["Download export", "Get a fresh link"]
    assert message_lines({"text": "only <#C1|general>"}) == ["only #general"]


def test_a_phase_that_does_not_happen_ends_the_demo_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fake Asana never moves past pending: exit 1, one line naming the phase, all cleaned up."""
    monkeypatch.setattr(story, "FAST", story.Pace(story.FAST_WATCH, hold=0.2, phase=6.0))
    monkeypatch.setattr(story.FakeAsana, "advance", lambda self, gid: self.state(gid))
    out, err = io.StringIO(), io.StringIO()
    code = story.run_demo(fast=True, screen=Screen(out, err))
    assert code == 1, out.getvalue()
    lines = err.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("asana-export-bot demo: no status card showing started within 6 s")
    ports = {int(p) for p in _URL.findall(out.getvalue())}
    assert ports and not [p for p in ports if listening(p)]
