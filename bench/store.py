"""Store on SQLite: CPU per operation of the real `bot.store.Store` at 10,000 started exports.

Issue 14 bounds the store's own work, apart from Slack and Asana: the already-watching path, a
new watch, and one poll's store work per export. The measurement is
`bench.store_alternatives.measure` (seeding, recording, replays); the baseline column is its
"one thread" replay of the very statements the store ran, so the ratio is what the async
engine adds over the SQL itself. The targets are on our value.
"""

from __future__ import annotations

import asyncio

from bench.common import Context, Row, Section, Target
from bench.store_alternatives import measure

NAME = "store"
#: Issue 14's bounds, ms of CPU per operation.
LIMITS_MS = {"already watching": 0.5, "new watch": 1.5, "poll (per export)": 1.5}
FIGURES = {
    "already watching": "already watching, `Store.subscribe` of an existing watch",
    "new watch": "new watch, `Store.subscribe` of a new channel",
    "poll (per export)": "one poll's store work per export, `claim_due` of 50 + 50 `record_poll`",
}


def run(ctx: Context) -> Section:
    """Measure at the issue's size (smoke: a few hundred exports, to catch rot quickly)."""
    exports = ctx.pick(smoke=200, full=10_000)
    ops, rounds = ctx.pick(smoke=50, full=300), 3
    ctx.log(f"store: {exports:,} exports, {rounds} rounds")
    table = asyncio.run(measure(exports, rounds, ops=ops, workdir=ctx.subdir("store"), log=ctx.log))
    section = Section(NAME)
    for op, limit in LIMITS_MS.items():
        row = table[op]
        section.rows.append(
            Row(
                NAME,
                f"CPU per operation: {FIGURES[op]} ({exports:,} exports, SQLite)",
                row["today"] / 1000,
                "ms",
                row["one thread"] / 1000,
                Target(limit, on="value"),
            )
        )
    section.notes += [
        "Store: the real `bot.store.Store` on a SQLite file (each transaction one hand-off to"
        " the store's writer or reader thread, bot.sqlite_thread, except the short reads of a"
        " command's path, `Store.read_short`, and its short writes, `Store.write(short=True)`,"
        " which run on the event loop's thread while no other connection holds the write lock:"
        " here the already-watching check, a new watch's write and each poll's record) seeded"
        " with"
        f" {exports:,} started exports, one watch each from 100 channels (bulk INSERTs, as"
        f" `seed_watches` writes them). {ops} calls per subscribe phase, with the watch caps"
        " the bot passes (defaults; a new watch counts both); the poll phase claims 50 due"
        " exports and records 50 polls per batch, divided by the exports polled. CPU is"
        " `time.process_time()` of the benchmark process (the store's threads included),"
        f" median of {rounds} rounds on a fresh database each; ours includes the hooks that"
        " record its statements (a Python call each).",
        "Baseline: those recorded statements (BEGIN and the prepared statements the store runs"
        " on the sqlite3 connection itself included) replayed with the stdlib sqlite3 on one"
        " connection"
        " owned by one worker thread, one hand-off per operation, on a copy of the database from"
        " before the phase (`python -m bench.store_alternatives`). Replayed on the event loop's"
        " thread with no hand-off (the floor): "
        + ", ".join(f"{op} {table[op]['inline']:,.0f} µs" for op in LIMITS_MS)
        + ".",
    ]
    return section
