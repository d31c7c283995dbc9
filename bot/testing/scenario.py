"""In-process scenarios: the real runtime, Bolt app and watcher against the fakes, no process.

As bolt-python's own `tests/scenario_tests_async`: requests are signed like Slack's and dispatched
with `AsyncApp.async_dispatch`, so a scenario costs milliseconds instead of a process start. The
Asana and Slack clients still speak real HTTP to the fakes on 127.0.0.1 and the store is a real
database (a SQLite file or PostgreSQL). Time that the bot schedules by (`Runtime.now`) is a
`Clock` the test moves; the watcher runs when the test calls `tick()` or `recover()`, not when a
scheduler decides.

Typical use (an async test)::

    async with Scenario.open(asana, slack, f"sqlite:///{tmp_path / 'bot.db'}") as bot:
        answer = await bot.command("1200000000000555")
        asana.set_state("1200000000000555", "finished")
        await bot.run_until(lambda: finished_posts(slack))
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.app import build_bolt_app, build_runtime, build_watcher
from bot.archive.job import Archiver
from bot.config import Settings
from bot.db import open_database
from bot.demo.fake_slack import FakeSlack
from bot.demo.signing import (
    SignedResponse,
    form_body,
    interactive_form,
    signed_headers,
)
from bot.logging_setup import RedactFilter, TextFormatter
from bot.runtime import Runtime
from bot.schedule_firing import ScheduleFirer
from bot.store import Store
from bot.testing.env import bot_environment
from bot.testing.process import FAST_WATCH, SIGNING_SECRET
from bot.testing.slack_view import ACK_SECONDS

T = TypeVar("T")


class Clock:
    """`Runtime.now` for scenarios: starts at the real time and moves only when told."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> datetime:
        """Move time on by `seconds` (never back) and return the new now."""
        self._now += timedelta(seconds=max(0.0, seconds))
        return self._now


class WatcherDriver:
    """The ONE place the harness touches the watcher: build it, run a tick or a recovery pass."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._watcher = build_watcher(runtime)

    @property
    def owner(self) -> str:
        return self._watcher.owner

    async def tick(self) -> int:
        """One polling tick, as the scheduler runs it; how many exports it polled."""
        return await self._watcher.tick()

    async def recover(self) -> None:
        """One pass of the recovery job."""
        await self._watcher.recover()

    def slack_pause_reason(self) -> str | None:
        """Why posting to Slack is paused (as /healthz says it), or None."""
        return self._runtime.notify.status().reason


class _LogCatcher(logging.Handler):
    """Keeps every record any logger emits while the scenario runs."""

    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(level=logging.DEBUG)
        self._into = into

    def emit(self, record: logging.LogRecord) -> None:
        self._into.append(record)


_debug_users: list[int] = []  # one entry per open scenario
_level_before: list[int] = []


@contextlib.contextmanager
def _debug_logging() -> Iterator[None]:
    """The root logger at DEBUG while any scenario is open, as a test bot process logs.

    Counted, not saved and restored per scenario: scenarios that overlap and close in any order
    (replicas in `asyncio.gather`) must leave the level as the first one found it.
    """
    root = logging.getLogger()
    if not _debug_users:
        _level_before[:] = [root.level]
        root.setLevel(logging.DEBUG)
    _debug_users.append(1)
    try:
        yield
    finally:
        _debug_users.pop()
        if not _debug_users:
            root.setLevel(_level_before.pop())


class _OnlyGivenSettings(Settings):
    """Settings from the arguments alone: no environment variable, no .env file."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        **_: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def scenario_settings(asana: Any, slack: FakeSlack, database_url: str, **extra: str) -> Settings:
    """The bot's settings for a scenario: the same environment a bot process gets.

    Nothing comes from the process environment or a .env file (a developer's SLACK_APP_TOKEN would
    turn the app into Socket Mode): a scenario says everything it needs.
    """
    env = bot_environment(asana, slack, database_url, **{**FAST_WATCH, **extra})
    return _OnlyGivenSettings(**env)  # type: ignore[arg-type]


class Scenario:
    """One bot, in this process and this event loop; build it with `Scenario.open`."""

    def __init__(
        self,
        *,
        settings: Settings,
        runtime: Runtime,
        bolt: AsyncApp,
        clock: Clock,
        slack: FakeSlack,
    ) -> None:
        self.settings = settings
        self.slack = slack
        self.runtime = runtime
        self.bolt = bolt
        self.clock = clock
        self.watcher = WatcherDriver(runtime)
        #: The schedule job of this replica (bot.schedule_firing), ticked by `fire_schedules`.
        self.schedules = ScheduleFirer(runtime)
        #: The archive job of this replica (bot.archive.job), run by `archive`.
        self.archiver = Archiver(runtime)
        #: Every log record while the bot ran, at DEBUG as a test bot process logs.
        self.records: list[logging.LogRecord] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, asana: Any, slack: FakeSlack, database_url: str, **extra: str
    ) -> AsyncIterator[Scenario]:
        """The bot built as `serve` builds it (migrated database, auth.test), closed afterwards."""
        settings = scenario_settings(asana, slack, database_url, **extra)
        engine = await open_database(settings.DATABASE_URL)
        clock = Clock()
        runtime = build_runtime(settings, Store(engine))
        runtime.now = clock
        try:
            bolt = build_bolt_app(runtime)
            with contextlib.suppress(Exception):  # as at start-up: Slack down only warns
                auth = await runtime.slack.auth_test()
                runtime.installation.remember(
                    dict(auth.data) if isinstance(auth.data, dict) else None
                )
            scenario = cls(settings=settings, runtime=runtime, bolt=bolt, clock=clock, slack=slack)
            catcher = _LogCatcher(scenario.records)
            logging.getLogger().addHandler(catcher)
            try:
                with _debug_logging():
                    yield scenario
            finally:
                logging.getLogger().removeHandler(catcher)
        finally:
            await runtime.asana.aclose()
            if runtime.slack.session is not None:
                await runtime.slack.session.close()
            runtime.store.close()
            await engine.dispose()

    @property
    def tracebacks(self) -> list[logging.LogRecord]:
        """Records logged with exception info (a process test looks for "Traceback")."""
        return [r for r in self.records if r.exc_info]

    def logs(self) -> str:
        """The log as the bot process would write it: formatted lines, secrets redacted."""
        secrets = [
            secret.get_secret_value()
            for secret in (
                self.settings.SLACK_BOT_TOKEN,
                self.settings.SLACK_SIGNING_SECRET,
                self.settings.SLACK_APP_TOKEN,
                self.settings.ASANA_TOKEN,
            )
            if secret is not None
        ]
        redacting, formatter = RedactFilter(secrets), TextFormatter()
        lines = []
        for record in self.records:
            shown = copy.copy(record)  # the filter rewrites the record it passes
            if redacting.filter(shown):
                lines.append(formatter.format(shown))
        return "\n".join(lines)

    # -- requests, as Slack sends them ------------------------------------------------------

    async def dispatch(self, body: bytes, headers: dict[str, str]) -> SignedResponse:
        """Hand one HTTP request to the Bolt app; its answer, timed from dispatch to ack."""
        started = time.monotonic()
        response = await self.bolt.async_dispatch(
            AsyncBoltRequest(body=body.decode(), headers=headers)  # type: ignore[arg-type]
        )
        elapsed = time.monotonic() - started
        # The answer in the shape of an HTTP one, so assertions are shared with process tests.
        flat = {k: v[0] if isinstance(v, list) else v for k, v in response.headers.items()}
        return SignedResponse(response.status, httpx.Headers(flat), response.body or "", elapsed)

    async def signed(self, body: bytes, **header_options: Any) -> SignedResponse:
        """Dispatch `body` signed with the bot's secret (or forged/stale: see signed_headers)."""
        return await self.dispatch(
            body, signed_headers(body, secret=SIGNING_SECRET, **header_options)
        )

    async def slash(self, text: str, **fields: Any) -> SignedResponse:
        """One signed slash command; `fields` go to `slash_command_form` (the fake Slack fills
        in the workspace, and on Enterprise Grid the org, as Slack would)."""
        fields["response_url"] = fields.get("response_url") or self.slack.new_response_url()
        return await self.signed(form_body(self.slack.slash_command_payload(text=text, **fields)))

    async def command(self, text: str, channel: str = "C0001", **fields: Any) -> dict[str, Any]:
        """A slash command that must be acked with 200 inside Slack's 3 seconds; the ack's JSON."""
        response = await self.slash(text, channel_id=channel, **fields)
        assert response.status == 200, response.body_text
        assert response.elapsed < ACK_SECONDS, response.elapsed
        return json.loads(response.body_text)

    async def click(self, **fields: Any) -> SignedResponse:
        """One signed button click; `fields` go to `block_actions_payload` (through the fake
        Slack, as `slash`)."""
        fields["response_url"] = fields.get("response_url") or self.slack.new_response_url()
        payload = self.slack.block_actions_payload(**fields)
        return await self.signed(form_body(interactive_form(payload)))

    async def interact(self, payload: dict[str, Any]) -> SignedResponse:
        """One signed interactive payload (a home click, a view_submission) as Slack sends it."""
        return await self.signed(form_body(interactive_form(payload)))

    async def event(self, payload: dict[str, Any]) -> SignedResponse:
        """One signed Events API request (JSON), e.g. `FakeSlack.app_home_opened_payload`."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        return await self.signed(body, content_type="application/json")

    async def open_home(self, user_id: str, **fields: Any) -> dict[str, Any]:
        """`user_id` opens the App Home tab; the home view published to them (after settling)."""
        response = await self.event(self.slack.app_home_opened_payload(user_id, **fields))
        assert response.status == 200, response.body_text
        assert response.elapsed < ACK_SECONDS, response.elapsed
        await self.settle()
        view = self.slack.home_of(user_id)
        assert view is not None, "no home view was published"
        return view

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until the work listeners left running after their ack (respond, posts) is done.

        Bolt acks first and runs the rest of a listener as a task on this loop: a test that
        asserts on what came later waits for those tasks, not for a fixed time.
        """
        current = asyncio.current_task()
        deadline = time.monotonic() + timeout
        while True:
            pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
            if not pending:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"still running after {timeout}s: {pending}")
            await asyncio.wait(pending, timeout=left)

    # -- time and the watcher ---------------------------------------------------------------

    async def tick(self, after: float = 0.0) -> int:
        """Move the clock on by `after` seconds, then run one tick."""
        self.clock.advance(after)
        return await self.watcher.tick()

    async def fire_schedules(self, after: float = 0.0) -> int:
        """Move the clock on by `after` seconds, then run the schedule job once."""
        self.clock.advance(after)
        return await self.schedules.tick()

    async def archive(self, after: float = 0.0) -> int:
        """Move the clock on by `after` seconds, then run the archive job once (it returns when
        the archive it claimed is stored or given up)."""
        self.clock.advance(after)
        return await self.archiver.tick()

    async def recover(self, after: float = 0.0) -> None:
        """Move the clock on by `after` seconds, then run one recovery pass."""
        self.clock.advance(after)
        await self.watcher.recover()

    async def run_until(
        self,
        predicate: Callable[[], T],
        *,
        step: float | None = None,
        timeout: float = 10.0,
        recover: bool = True,
        pause: float = 0.01,
        what: str = "",
    ) -> T:
        """Tick (and recover) with the clock `step` seconds further each time until `predicate`.

        `step` defaults to POLL_MAX_SECONDS, so every watched export is due at each tick; `pause`
        is the real time between ticks (as TICK_SECONDS would be), which also lets listeners'
        background work run. The deadline is real time: it bounds what the fakes and the
        database take.
        """
        step = self.settings.POLL_MAX_SECONDS if step is None else step
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"not within {timeout}s: {what or predicate}")
            await self.tick(step)
            if recover:
                await self.recover()
            await asyncio.sleep(pause)

    async def ticks(self, count: int, *, step: float | None = None, recover: bool = True) -> None:
        """Run `count` more ticks (and recoveries), `step` seconds apart: what would happen next."""
        step = self.settings.POLL_MAX_SECONDS if step is None else step
        for _ in range(count):
            await self.tick(step)
            if recover:
                await self.recover()

    async def health(self) -> dict[str, Any]:
        """What /healthz adds to its answer: watches, due exports and the Slack pause."""
        store = self.runtime.store
        return {
            "replica": self.watcher.owner,
            "watches": await store.count_active_subscriptions(),
            "due": await store.due_count(self.clock()),
            "slack_paused": self.watcher.slack_pause_reason(),
        }
