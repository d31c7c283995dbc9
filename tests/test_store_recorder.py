"""The store benchmark's baseline replays what the store ran (bench.store_alternatives.Recorder).

The store runs its BEGIN and its command-path statements on the sqlite3 connection itself,
past SQLAlchemy's events (bot.sqlite_thread): a recorder that saw only those events replayed
a COMMIT per operation and reported a floor of 0 µs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bench.store_alternatives import Recorder
from bot.db import open_database
from bot.models import Export, ExportState
from bot.store import Store

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


async def test_a_new_watch_is_recorded_with_its_begin_statements_and_commit(
    tmp_path: Path,
) -> None:
    engine = await open_database(f"sqlite:///{tmp_path / 'bot.db'}")
    store = Store(engine)
    recorder = Recorder()
    try:
        recorder.start()
        await store.subscribe(
            team_id="T1",
            channel_id="C1",
            user_id="U1",
            export=Export(gid="1", state=ExportState.STARTED, raw_state="started"),
            now=NOW,
            next_poll_at=NOW,
        )
        recorder.stop()
    finally:
        recorder.close()
        store.close()
        await engine.dispose()
    (op,) = recorder.ops
    sql = [item[0].split(" (")[0] if kind == "sql" else item for kind, item in op]
    assert sql[0].startswith("SELECT subscriptions.id")  # already watching? (a short read)
    assert sql[1] == "BEGIN IMMEDIATE"
    assert any(s.startswith("INSERT INTO exports") for s in sql)
    assert any(s.startswith("INSERT INTO subscriptions") for s in sql)
    assert sql[-1] == "COMMIT"
