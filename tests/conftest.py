"""Shared fixtures: fake Asana and fake Slack on 127.0.0.1, the real bot process, and the bot
built in this process (`scenario`) for scenario tests."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.testing import TEST_ASANA_TOKEN, BotProcess, bot_environment
from bot.testing.moto_server import Bucket, MotoS3
from bot.testing.scenario import Scenario

ASANA_TOKEN = TEST_ASANA_TOKEN  # recognisable, so leak checks can grep for it
POSTGRES_URL_VAR = "ASANA_BOT_TEST_POSTGRES_URL"

# Tests check behaviour, not speed: Hypothesis's 200 ms deadline per example (and its "too
# slow" health check) failed a pure test on a loaded machine. Examples are still as many.
settings.register_profile("behaviour", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("behaviour")


@pytest.fixture
def fake_asana() -> Iterator[FakeAsana]:
    with FakeAsana(token=ASANA_TOKEN) as fake:
        yield fake


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def bot_env(fake_asana: FakeAsana, fake_slack: FakeSlack, tmp_path: Path) -> dict[str, str]:
    """Everything a bot process needs to talk to the fakes, HTTP mode, SQLite in tmp_path."""
    return bot_environment(fake_asana, fake_slack, f"sqlite:///{tmp_path / 'bot.db'}")


@pytest.fixture
def http_bot(bot_env: dict[str, str], tmp_path: Path) -> Iterator[BotProcess]:
    bot = BotProcess(tmp_path, bot_env).start()
    try:
        yield bot
    finally:
        bot.stop()


@pytest.fixture
def socket_bot(
    bot_env: dict[str, str], fake_slack: FakeSlack, tmp_path: Path
) -> Iterator[BotProcess]:
    env = {**bot_env, "SLACK_APP_TOKEN": fake_slack.app_token, "SLACK_SIGNING_SECRET": ""}
    bot = BotProcess(tmp_path, env).start()
    try:
        fake_slack.wait_for_socket_connection(timeout=10)
        yield bot
    finally:
        bot.stop()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """moto's S3 server on 127.0.0.1, one per test worker (it takes a second or two to start)."""
    with MotoS3(log_path=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture
def s3_bucket(moto_server: MotoS3) -> Bucket:
    """An empty bucket of this test's own on the worker's moto server."""
    return moto_server.new_bucket()


StartScenario = Callable[..., Awaitable[Scenario]]


@pytest.fixture
async def start_scenario(
    fake_asana: FakeAsana, fake_slack: FakeSlack, tmp_path: Path
) -> AsyncIterator[StartScenario]:
    """Build bots in this process: `await start_scenario(LINK_POLICY="anywhere")`.

    Each talks to the fakes over real HTTP and uses bot.db in tmp_path unless given a
    `database_url`; all are closed after the test.
    """
    async with contextlib.AsyncExitStack() as stack:

        async def start(database_url: str | None = None, **settings: str) -> Scenario:
            url = database_url or f"sqlite:///{tmp_path / 'bot.db'}"
            return await stack.enter_async_context(
                Scenario.open(fake_asana, fake_slack, url, **settings)
            )

        yield start


@pytest.fixture
async def scenario(start_scenario: StartScenario) -> Scenario:
    """One bot in this process with the default settings of a scenario."""
    return await start_scenario()


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get(POSTGRES_URL_VAR)
    if not url:
        pytest.skip(
            f"{POSTGRES_URL_VAR} is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)"
        )
    return url


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """A throwaway PostgreSQL database for one test, dropped afterwards."""
    import uuid

    import sqlalchemy as sa

    name = f"aeb_{uuid.uuid4().hex[:12]}"
    # No pool: a test that restarts PostgreSQL must not leave us a dead connection to drop with.
    admin = sa.create_engine(
        _sync_url(postgres_url), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(_sync_url(postgres_url)).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _sync_url(url: str) -> str:
    """psycopg (sync) for test administration, whatever driver the URL names."""
    for prefix in (
        "postgresql+asyncpg://",
        "postgresql+psycopg://",
        "postgres://",
        "postgresql://",
    ):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


#: Fixtures that reach the PostgreSQL server, directly or through a benchmark.
_POSTGRES_FIXTURES = {"postgres_url", "fresh_postgres_url", "restartable_postgres_url"}
_POSTGRES_FILES = {"test_bench_smoke.py", "test_chaos.py"}


#: Modules whose tests share one bot process (a module-scoped fixture): one worker starts it once.
_SHARED_PROCESS_FILES = {"test_bad_input.py", "test_http_endpoint.py", "test_http_limits.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist every test that uses PostgreSQL runs on one worker, one at a time:
    tests/test_faults.py restarts the server, which would cut every other test's connections.
    The tests of a module that shares one bot process run on one worker too."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (
            _POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ()))
            or params.get("backend") == "postgresql"
            or item.path.name in _POSTGRES_FILES
        ):
            item.add_marker(pytest.mark.xdist_group("postgres"))
        elif item.path.name in _SHARED_PROCESS_FILES:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
