"""Start-up skips Alembic when the schema is at head (bot.db.upgrade's cheap check).

The head read from the migration files must be Alembic's own, a schema behind head must still
be upgraded, and a start on a database at head must not import Alembic at all.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from bot.db import create_engine, head_revision, migrations_path, open_database, upgrade


def test_head_is_alembics_own() -> None:
    from alembic.script import ScriptDirectory

    from bot.db import alembic_config

    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()


def _write(folder: Path, name: str, revision: str, down: str) -> None:
    (folder / name).write_text(f'"""x"""\nrevision = "{revision}"\ndown_revision = {down}\n')


def test_head_is_none_unless_plain(tmp_path: Path) -> None:
    _write(tmp_path, "a.py", "a", "None")
    _write(tmp_path, "b.py", "b", '"a"')
    assert head_revision(tmp_path) == "b"
    _write(tmp_path, "c.py", "c", '"a"')  # two heads: Alembic decides
    assert head_revision(tmp_path) is None
    _write(tmp_path, "m.py", "m", '("b", "c")')  # a merge makes one head again
    assert head_revision(tmp_path) == "m"
    (tmp_path / "d.py").write_text("revision = make_one()\n")
    assert head_revision(tmp_path) is None
    assert head_revision(tmp_path / "missing") is None


def _revision(path: Path) -> list[tuple[str]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT version_num FROM alembic_version").fetchall()


async def test_a_schema_behind_head_is_still_upgraded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    engine = create_engine(url)
    await upgrade(engine, "0002")
    await engine.dispose()
    assert _revision(tmp_path / "bot.db") == [("0002",)]
    engine = await open_database(url)
    await engine.dispose()
    assert _revision(tmp_path / "bot.db") == [(head_revision(),)]


async def test_an_unknown_revision_goes_to_alembic(tmp_path: Path) -> None:
    """A database from a newer release: Alembic's own refusal, not a silent start."""
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    (await open_database(url)).sync_engine.dispose()
    with closing(sqlite3.connect(tmp_path / "bot.db")) as conn, conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(Exception, match="9999"):
        await open_database(url)


_OPEN = """
import asyncio, sys
from bot.db import open_database

async def main():
    engine = await open_database(sys.argv[1])
    await engine.dispose()

asyncio.run(main())
print("alembic" in sys.modules)
"""


def test_a_start_at_head_does_not_import_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"

    def start() -> str:
        done = subprocess.run(
            [sys.executable, "-c", _OPEN, url], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip()

    assert start() == "True", "the first start creates the schema with Alembic"
    assert start() == "False", "a start at head needs no Alembic"
    assert Path(migrations_path()).is_dir()
