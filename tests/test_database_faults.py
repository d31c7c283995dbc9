"""Databases that vanish or are broken (issue 8), against the real `asana-export-bot run`.

What an operator would notice is asserted: start-up on something that is not a SQLite database
stops with one line and exit 78; a SQLite file deleted (or replaced) under a running bot makes
/readyz answer 503 naming it, a new watch is refused plainly instead of being written into a file
nobody will ever read again, and the ticks go on logging one line each; the SQLite file and its
-wal/-shm are readable by their owner only; and SQL stays out of the log unless LOG_SQL asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.testing import FAST_WATCH, BotProcess, wait_until
from tests.test_cli import run_cli
from tests.test_faults import ask, posts_to, text_of

GID = "1200000000000881"
OTHER_GID = "1200000000000882"
EXIT_CONFIG = 78
#: Loggers that print SQL statements, their parameters or migration chatter.
SQL_LOGGERS = ("sqlalchemy", "aiosqlite", "alembic")


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run the bot under `mask`: the file mode must not depend on the operator's umask."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sql_lines(log: str) -> list[str]:
    """Log lines written by a SQL library (the format is `time LEVEL logger: message`)."""
    pattern = re.compile(r"^\S+ \S+ (?:INFO|DEBUG|WARNING) (" + "|".join(SQL_LOGGERS) + r")[.:]")
    return [line for line in log.splitlines() if pattern.match(line)]


def health(bot: BotProcess) -> httpx.Response:
    """Readiness: /healthz is liveness and stays 200 while the process serves."""
    assert bot.proc is not None and bot.proc.poll() is None, "the bot process exited"
    return httpx.get(bot.ready_url, timeout=3)


# ------------------------------------------------------------------ not a SQLite database


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 20)
    return path


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "a-directory"
    path.mkdir()
    return path


def _short_file(tmp_path: Path) -> Path:
    path = tmp_path / "short.db"
    path.write_bytes(b"SQLite")  # shorter than SQLite's 100-byte header
    return path


def _damaged_file(tmp_path: Path) -> Path:
    path = tmp_path / "damaged.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4080)  # the header, then garbage
    return path


def _under_a_file(tmp_path: Path) -> Path:
    return _text_file(tmp_path) / "bot.db"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_text_file, "not a SQLite database"),
        (_short_file, "not a SQLite database"),
        (_damaged_file, "not a usable SQLite database"),
        (_directory, "is a directory"),
        (_under_a_file, "cannot be created"),
    ],
    ids=["text-file", "short-file", "damaged-file", "directory", "parent-is-a-file"],
)
def test_start_on_something_that_is_not_a_sqlite_database_exits_78_in_one_line(
    bot_env: dict[str, str], tmp_path: Path, make, reason: str
) -> None:
    target = make(tmp_path)
    before = target.read_bytes() if target.is_file() else None
    result = run_cli(["run"], {**bot_env, "DATABASE_URL": f"sqlite:///{target}"}, tmp_path)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == EXIT_CONFIG, output
    assert len(output.splitlines()) == 1, output
    assert "DATABASE_URL" in output and reason in output and str(target) in output, output
    assert "Traceback" not in output
    if before is not None:
        assert target.read_bytes() == before, "the operator's file was changed"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_start_on_an_unreadable_file_exits_78_in_one_line(
    bot_env: dict[str, str], tmp_path: Path
) -> None:
    target = tmp_path / "locked.db"
    target.write_bytes(b"")
    target.chmod(0)
    result = run_cli(["run"], {**bot_env, "DATABASE_URL": f"sqlite:///{target}"}, tmp_path)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == EXIT_CONFIG, output
    assert len(output.splitlines()) == 1 and "DATABASE_URL" in output, output


# ------------------------------------------------------------------------------- file mode


def test_new_sqlite_file_and_its_wal_and_shm_are_owner_only_whatever_the_umask(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot_env: dict[str, str], tmp_path: Path
) -> None:
    db = tmp_path / "data" / "bot.db"
    env = {**bot_env, **FAST_WATCH, "DATABASE_URL": f"sqlite:///{db}"}
    fake_asana.set_export(GID, "pending")
    with umask(0o002):
        bot = BotProcess(tmp_path, env).start()
    try:
        assert "Watching" in text_of(ask(bot, fake_slack, GID))  # a write: -wal and -shm exist
        files = [db, db.with_name("bot.db-wal"), db.with_name("bot.db-shm")]
        wait_until(lambda: all(f.exists() for f in files), 5, "the -wal and -shm files")
        modes = {f.name: oct(mode(f)) for f in files}
        assert modes == {f.name: oct(0o600) for f in files}
        assert "Traceback" not in bot.logs()
    finally:
        bot.stop()


def test_an_existing_group_readable_file_is_left_alone_with_a_warning(
    bot_env: dict[str, str], tmp_path: Path
) -> None:
    db = tmp_path / "mine.db"
    db.touch()
    db.chmod(0o640)  # the operator's choice (a backup group, say): warned about, not changed
    bot = BotProcess(tmp_path, {**bot_env, "DATABASE_URL": f"sqlite:///{db}"}).start()
    try:
        assert mode(db) == 0o640
        warning = [line for line in bot.logs().splitlines() if "0640" in line]
        assert warning and "WARNING" in warning[0] and str(db) in warning[0], bot.logs()
    finally:
        bot.stop()


# ------------------------------------------------------------------ a file that vanishes


@pytest.mark.parametrize(
    "suffixes",
    [("", "-wal", "-shm"), ("",)],
    ids=["with-wal-and-shm", "main-file-only"],  # the latter: SQLite would notice nothing
)
def test_deleted_sqlite_file_fails_health_refuses_new_watches_and_keeps_running(
    fake_asana: FakeAsana,
    fake_slack: FakeSlack,
    bot_env: dict[str, str],
    tmp_path: Path,
    suffixes: tuple[str, ...],
) -> None:
    db = tmp_path / "bot.db"
    fake_asana.set_export(GID, "pending")
    fake_asana.set_export(OTHER_GID, "pending")
    bot = BotProcess(tmp_path, {**bot_env, **FAST_WATCH}).start()
    try:
        assert "Watching" in text_of(ask(bot, fake_slack, GID, channel="C0001"))
        assert posts_to(fake_slack, "C0001"), "the status card of the first watch"
        assert health(bot).status_code == 200

        for suffix in suffixes:
            Path(f"{db}{suffix}").unlink(missing_ok=True)

        response = wait_until(
            lambda: (r := health(bot)).status_code == 503 and r, 5, "/readyz answers 503"
        )
        body = response.json()
        assert body["failing"] == ["database"], body
        assert "database file is gone" in body["parts"]["database"]["detail"], body

        started = time.monotonic()
        answer = ask(bot, fake_slack, OTHER_GID, channel="C0002")  # asserts the 3 s itself
        print(f"refused watch answered in {time.monotonic() - started:.3f}s")
        assert answer["response_type"] == "ephemeral"
        assert "database is unavailable" in text_of(answer), answer
        assert "did not start watching" in text_of(answer), answer

        # A few ticks later: still up, still refusing, no card, no file made up from nothing.
        wait_until(
            lambda: bot.logs().count("tick skipped") >= 3, 10, "three ticks logged as skipped"
        )
        assert health(bot).status_code == 503
        assert not posts_to(fake_slack, "C0002"), "a status card for a watch that was refused"
        assert not db.exists(), "the bot made a new, empty database file"
        logs = bot.logs()
        assert "Traceback" not in logs, logs[-3000:]
        skipped = [line for line in logs.splitlines() if "tick skipped" in line]
        assert all("database file" in line for line in skipped), skipped[:3]
    finally:
        bot.stop()


def test_replaced_sqlite_file_is_noticed_by_the_store(tmp_path: Path) -> None:
    """In process: a file swapped in under the running engine (a restore) is not used."""
    from bot.db import DatabaseUnavailable, create_engine, upgrade
    from bot.store import Store

    db = tmp_path / "bot.db"

    async def scenario() -> None:
        engine = create_engine(f"sqlite:///{db}")
        try:
            await upgrade(engine)
            store = Store(engine)
            assert await store.count_active_subscriptions() == 0
            shutil.copy(db, tmp_path / "copy.db")
            os.replace(tmp_path / "copy.db", db)
            with pytest.raises(DatabaseUnavailable, match="database file is gone"):
                await store.count_active_subscriptions()
            with pytest.raises(DatabaseUnavailable):
                await store.release_leases("someone")
            store.close()
        finally:
            await engine.dispose()

    asyncio.run(scenario())


# ---------------------------------------------------------------------------- SQL logging


def test_debug_log_has_no_sql_unless_log_sql(
    fake_asana: FakeAsana, fake_slack: FakeSlack, bot_env: dict[str, str], tmp_path: Path
) -> None:
    fake_asana.set_export(GID, "pending")
    fake_asana.set_export(OTHER_GID, "pending")

    quiet = BotProcess(tmp_path, {**bot_env, **FAST_WATCH, "LOG_SQL": "false"}, name="quiet")
    quiet.start()
    try:
        assert "Watching" in text_of(ask(quiet, fake_slack, GID))
    finally:
        quiet.stop()
    log = quiet.logs()
    assert "DEBUG" in log, "the bot ran at LOG_LEVEL=DEBUG"
    assert sql_lines(log) == [], sql_lines(log)[:5]
    assert "INSERT INTO" not in log and "SELECT " not in log
    assert "Context impl" not in log and "transactional DDL" not in log

    loud = BotProcess(tmp_path, {**bot_env, **FAST_WATCH, "LOG_SQL": "true"}, name="loud").start()
    try:
        assert "Watching" in text_of(ask(loud, fake_slack, OTHER_GID, channel="C0002"))
    finally:
        loud.stop()
    log = loud.logs()
    assert any("INSERT INTO subscriptions" in line for line in sql_lines(log)), log[-3000:]
    assert OTHER_GID in "\n".join(sql_lines(log)), "parameters are logged too"
    assert fake_slack.bot_token not in log, "still through the redacting formatter"


def test_info_log_has_no_alembic_chatter(bot_env: dict[str, str], tmp_path: Path) -> None:
    bot = BotProcess(tmp_path, {**bot_env, "LOG_LEVEL": "INFO"}).start()
    bot.stop()
    log = bot.logs()
    assert "Context impl" not in log and "transactional DDL" not in log, log
    assert sql_lines(log) == []
