"""`asana-export-bot demo`: one export's whole story, the real bot against the fakes on 127.0.0.1.

The fake Asana and fake Slack run in this process (threaded servers); the bot is the real
`asana-export-bot run`, a subprocess in HTTP mode with its SQLite file in a temporary directory.
The demo types `/asana-export <gid>` as a signed request, moves the export pending -> started ->
finished on the fake Asana, shows what the bot does in Slack as it happens, presses "Get a fresh
link", and cleans everything up. Every phase has a deadline: a phase that does not happen ends the
demo with one line saying which, and a non-zero exit code.
"""

from __future__ import annotations

import contextlib
import re
import signal
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx

from bot.config import Settings
from bot.demo.downloads import DemoDownloads
from bot.demo.fake_asana import DEFAULT_ORGANIZATION_GID, FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.demo.feed import SlackFeed, is_finished_post
from bot.demo.screen import Screen
from bot.demo.signing import (
    VERIFICATION_TOKEN,
    SignedResponse,
    post_block_actions,
    post_slash_command,
)
from bot.demo.slack_text import buttons, card_state, message_lines
from bot.messages import FRESH_LINK_ACTION
from bot.testing import FAST_WATCH, BotProcess, bot_environment

T = TypeVar("T")

EXPORT_GID = "1208000000000042"
CHANNEL_ID, CHANNEL_NAME = "C0DEMO0001", "asana-exports"
USER_ID, USER_NAME = "U0DEMO0001", "alex"
COMMAND = "/asana-export"
#: How Slack would name the demo's ids on screen.
NAMES = {USER_ID: USER_NAME, CHANNEL_ID: CHANNEL_NAME}
# Obviously fake credentials: they open nothing but the fakes of this process.
SLACK_BOT_TOKEN = "xoxb-demo-not-a-real-token"
SLACK_APP_TOKEN = "xapp-demo-not-a-real-token"
ASANA_TOKEN = "demo-asana-token-not-a-real-one"
SIGNING_SECRET = "demo-signing-secret-not-a-real-one"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


@dataclass(frozen=True, slots=True)
class Pace:
    """How fast the story goes: the bot's watch timings and the demo's own waits."""

    watch: Mapping[str, str]  # settings that make the bot poll every second or two
    hold: float  # seconds the fake Asana stays on a state once the card shows it
    phase: float  # seconds a phase may take before the demo gives up


FAST = Pace(FAST_WATCH, hold=0.5, phase=10.0)
NORMAL = Pace(
    {**FAST_WATCH, "TICK_SECONDS": "0.5", "POLL_INITIAL_SECONDS": "2", "POLL_MAX_SECONDS": "2"},
    hold=3.0,
    phase=20.0,
)


class DemoFailed(Exception):
    """A phase did not happen in time; the message is the one line the user sees."""


class Stopped(Exception):
    """SIGTERM arrived (Ctrl-C arrives as KeyboardInterrupt)."""


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: let the clean-up finish
    raise Stopped


def bot_env(asana: FakeAsana, slack: FakeSlack, workdir: Path, pace: Pace) -> dict[str, str]:
    """The bot's settings: the fakes, a SQLite file in `workdir`, HTTP mode, fast watching."""
    return bot_environment(
        asana,
        slack,
        f"sqlite:///{workdir / 'demo.db'}",
        asana_token=ASANA_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        LOG_LEVEL="INFO",
        **pace.watch,
    )


def without_user_settings(environ: Mapping[str, str], ours: Mapping[str, str]) -> dict[str, str]:
    """The bot's environment minus any setting of the user's own (their LINK_POLICY, ...)."""
    return {
        k: v
        for k, v in environ.items()
        if k not in Settings.model_fields or k in ours or k in ("PORT", "HOST")
    }


def curl_snippet(events_url: str, response_url: str) -> list[str]:
    """A bash snippet that signs one slash command like Slack does and sends it with curl."""
    fields = {
        "token": VERIFICATION_TOKEN,
        "team_id": "T0001",
        "channel_id": CHANNEL_ID,
        "channel_name": CHANNEL_NAME,
        "user_id": USER_ID,
        "user_name": USER_NAME,
        "command": COMMAND,
        "response_url": response_url,
    }
    return [
        "text='help'   # or list, list+all, a gid (a + for each space)",
        f'body="{urlencode(fields)}&text=$text"',
        "ts=$(date +%s)",
        'sig="v0=$(printf \'v0:%s:%s\' "$ts" "$body"'
        f" | openssl dgst -sha256 -hmac '{SIGNING_SECRET}' | sed 's/^.*= //')\"",
        'curl -s -H "X-Slack-Request-Timestamp: $ts" -H "X-Slack-Signature: $sig"'
        f' --data "$body" {events_url}; echo',
    ]


class Story:
    """One run of the demo against started fakes and a bot process not yet started."""

    def __init__(
        self,
        screen: Screen,
        pace: Pace,
        asana: FakeAsana,
        slack: FakeSlack,
        downloads: DemoDownloads,
        bot: BotProcess,
    ) -> None:
        self.screen, self.pace = screen, pace
        self.asana, self.slack, self.downloads, self.bot = asana, slack, downloads, bot
        self.feed = SlackFeed(slack, NAMES)
        self.card_ts: str | None = None

    # ------------------------------------------------------------------ the story

    def run(self) -> None:
        """The whole story, or DemoFailed naming the phase that did not happen."""
        s = self.screen
        self._set_stage()
        s.say(
            f"Fake Asana on {self.asana.base_url}, fake Slack on {self.slack.base_url}, "
            f"download links on {self.downloads.base_url}"
        )
        s.say(
            "Starting the real bot: `asana-export-bot run` in HTTP mode,"
            f" SQLite in {self.bot.workdir}/demo.db (removed at the end)"
        )
        with s.waiting("waiting for the bot to answer /healthz"):
            try:
                self.bot.start(timeout=self.pace.phase)
            except RuntimeError:
                raise DemoFailed(
                    f"the bot did not start within {self.pace.phase:g} s{self._bot_said()}"
                ) from None
        s.say(f"The bot listens on {self.bot.events_url}")

        s.say(f"@{USER_NAME} types `{COMMAND} {EXPORT_GID}` in #{CHANNEL_NAME}", "you")
        answer = self._command(EXPORT_GID)
        if answer.status != 200:
            raise DemoFailed(f"the bot answered the slash command with HTTP {answer.status}")
        s.show(
            f"Slack: the bot's answer to {COMMAND} {EXPORT_GID} (only @{USER_NAME} sees it)",
            message_lines(answer.json() or {}, NAMES),
            "answer",
        )
        self.card_ts = self._wait(self._card_ts, "status card in the channel")
        self._wait(lambda: self._card_state() == "pending", "status card showing pending")
        for state in ("started", "finished"):
            self._pump_for(self.pace.hold)
            self.asana.advance(EXPORT_GID)
            s.say(f"Fake Asana: export {EXPORT_GID} is now {state}", "asana")
            self._wait(
                lambda state=state: self._card_state() == state,  # type: ignore[misc]
                f"status card showing {state}",
            )
        post = self._wait(self._finished_post, "post saying the export is ready")
        self._try_link(post)
        self._press_fresh_link(post)
        s.say("That is the whole story: looked up, watched, announced once, a fresh link.", "bot")

    def keep(self) -> None:
        """Leave the bot running for commands by hand; returns on Ctrl-C or SIGTERM."""
        s = self.screen
        response_url = self.slack.new_response_url()
        s.say(
            f"Ready: the bot keeps running at {self.bot.events_url}"
            f" (signing secret: {SIGNING_SECRET}). Ctrl-C stops it and removes its files."
        )
        s.say(
            "Send it a signed slash command from another terminal (bash, curl, openssl);"
            f" set text to help, list, {EXPORT_GID} or any gid (the fake Asana knows only"
            " that one). What the bot does in Slack appears here:"
        )
        s.verbatim(curl_snippet(self.bot.events_url, response_url))
        with contextlib.suppress(KeyboardInterrupt, Stopped), s.waiting("Ctrl-C to stop"):
            while True:
                self._pump_for(0.2)
                self._check_bot()
        s.say("Stopping the bot and removing its temporary files")

    # ------------------------------------------------------------------ steps

    def _set_stage(self) -> None:
        self.slack.add_channel(CHANNEL_ID, name=CHANNEL_NAME, is_private=True, members=[USER_ID])
        self.asana.set_export(
            EXPORT_GID,
            "pending",
            organization_gid=DEFAULT_ORGANIZATION_GID,
            download_url=lambda: self.downloads.link(DEFAULT_ORGANIZATION_GID, EXPORT_GID),
        )
        self.asana.script(EXPORT_GID, ["pending", "started", "finished"], advance="manual")

    def _command(self, text: str) -> SignedResponse:
        return post_slash_command(
            self.bot.events_url,
            secret=SIGNING_SECRET,
            text=text,
            command=COMMAND,
            response_url=self.slack.new_response_url(),
            team_id=self.slack.team_id,
            channel_id=CHANNEL_ID,
            channel_name=CHANNEL_NAME,
            user_id=USER_ID,
            user_name=USER_NAME,
        )

    def _try_link(self, post: Mapping[str, Any]) -> None:
        link = next((str(b["url"]) for b in buttons(post) if b.get("url")), None)
        if link is None:
            raise DemoFailed("the ready post carries no download link")
        with httpx.Client(timeout=5, trust_env=False) as client:
            got = client.get(link)
        self.screen.say(
            f"Opening the link: HTTP {got.status_code}, {len(got.content)} bytes"
            f" of {got.headers.get('content-type', '?')} (the demo's stand-in for the export)"
        )

    def _press_fresh_link(self, post: Mapping[str, Any]) -> None:
        s = self.screen
        ts = self._wait(self._finished_ts, "ts of the ready post")
        s.say(f"@{USER_NAME} presses [Get a fresh link] on that post", "you")
        response_url = self.slack.new_response_url()
        pressed = post_block_actions(
            self.bot.events_url,
            secret=SIGNING_SECRET,
            action_id=FRESH_LINK_ACTION,
            value=EXPORT_GID,
            button_text="Get a fresh link",
            response_url=response_url,
            message=self.slack.wire_message(CHANNEL_ID, ts),
            channel_id=CHANNEL_ID,
            channel_name=CHANNEL_NAME,
            user_id=USER_ID,
            user_name=USER_NAME,
            team_id=self.slack.team_id,
        )
        if pressed.status != 200:
            raise DemoFailed(f"the bot answered the button press with HTTP {pressed.status}")
        self._wait(lambda: self.slack.responses(response_url), "answer to the button press")
        self._pump()

    # ------------------------------------------------------------------ what the fakes saw

    def _card_ts(self) -> str | None:
        for call in self.slack.calls_to("chat.postMessage"):
            if call.ok and call.body.get("channel") == CHANNEL_ID and card_state(call.body):
                return str((call.response or {}).get("ts") or "") or None
        return None

    def _card_state(self) -> str | None:
        if self.card_ts is None:
            return None
        stored = self.slack.message(CHANNEL_ID, self.card_ts)
        return card_state(stored) if stored else None

    def _finished_calls(self) -> list[Any]:
        return [
            c
            for c in self.slack.calls_to("chat.postMessage")
            if c.ok and c.body.get("channel") == CHANNEL_ID and is_finished_post(c.body)
        ]

    def _finished_post(self) -> Mapping[str, Any] | None:
        found = self._finished_calls()
        return found[0].body if found else None

    def _finished_ts(self) -> str | None:
        found = self._finished_calls()
        return str((found[0].response or {}).get("ts")) if found else None

    # ------------------------------------------------------------------ waiting and showing

    def _pump(self) -> None:
        for event in self.feed.poll():
            self.screen.show(event.title, event.lines, event.kind)

    def _pump_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            self._pump()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.05, left))

    def _check_bot(self) -> None:
        proc = self.bot.proc
        if proc is not None and proc.poll() is not None:
            raise DemoFailed(f"the bot exited with code {proc.returncode}{self._bot_said()}")

    def _wait(self, predicate: Callable[[], T | None], what: str) -> T:
        """Show events while waiting for `predicate` (`what` it means); DemoFailed after a phase."""
        deadline = time.monotonic() + self.pace.phase
        with self.screen.waiting(f"waiting for {what}"):
            while True:
                self._pump()
                value = predicate()
                if value:
                    self._pump()
                    return value
                self._check_bot()
                if time.monotonic() >= deadline:
                    raise DemoFailed(f"no {what} within {self.pace.phase:g} s{self._bot_said()}")
                time.sleep(0.05)

    def _bot_said(self) -> str:
        """The bot's last error line, to end a failure line with (or nothing)."""
        problems = [
            line
            for line in self.bot.logs().splitlines()
            if re.search(r"\b(ERROR|CRITICAL)\b|cannot start|Slack rejected", line)
        ]
        return f"; the bot's log says: {problems[-1].strip()[:300]}" if problems else ""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(*, fast: bool = False, keep: bool = False, screen: Screen | None = None) -> int:
    """Run the story (and with `keep` stay up until Ctrl-C/SIGTERM); the process exit code."""
    screen = screen or Screen()
    pace = FAST if fast else NORMAL
    kept = False
    try:
        with _sigterm_raises(), contextlib.ExitStack() as stack:
            workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="asana-export-bot-demo-"))
            )
            asana = stack.enter_context(FakeAsana(token=ASANA_TOKEN))
            slack = stack.enter_context(
                FakeSlack(bot_token=SLACK_BOT_TOKEN, app_token=SLACK_APP_TOKEN)
            )
            downloads = stack.enter_context(DemoDownloads())
            ours = bot_env(asana, slack, workdir, pace)
            bot = BotProcess(workdir, ours, name="bot")
            bot.env = without_user_settings(bot.env, ours)
            stack.callback(bot.stop)
            story = Story(screen, pace, asana, slack, downloads, bot)
            story.run()
            if keep:
                kept = True
                story.keep()
        return EXIT_OK
    except DemoFailed as exc:
        screen.fail(str(exc))
        return EXIT_FAILED
    except (KeyboardInterrupt, Stopped):
        return EXIT_OK if kept else EXIT_INTERRUPTED


__all__ = ["FAST", "NORMAL", "Pace", "Story", "curl_snippet", "run_demo"]
