"""Shared fixtures: fake Asana and fake Slack on 127.0.0.1, and the real bot process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.botproc import SIGNING_SECRET, BotProcess
from tests.fakes.asana import FakeAsana
from tests.fakes.slack import FakeSlack

ASANA_TOKEN = "asana-canary-token-6f1d2c"  # recognisable, so leak checks can grep for it
POSTGRES_URL_VAR = "ASANA_BOT_TEST_POSTGRES_URL"


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
    return {
        "SLACK_BOT_TOKEN": fake_slack.bot_token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": fake_slack.api_url,
        "SLACK_APP_TOKEN": "",
        "ASANA_TOKEN": ASANA_TOKEN,
        "ASANA_BASE_URL": fake_asana.base_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
        "ASANA_MAX_RETRY_SECONDS": "8",
    }


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
