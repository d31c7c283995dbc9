"""Coalescing: one export watched by 1, 10 and 100 channels costs one Asana request per poll.

One bot process watches three exports at once, each by a different number of channels, on a
flat 1 s schedule; the fake Asana's request log, grouped into poll rounds, gives requests per
poll. N=1 is the baseline. At the end each export finishes in turn, and the fan-out is timed:
from the flip to the last of its N "finished" posts, with the Asana requests it took.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import (
    BENCH_ORG_NAME,
    Context,
    Row,
    Section,
    Target,
    Watch,
    bot_env,
    cpu_seconds,
    fakes,
    seed_watches,
    sleep_until,
    wait_until,
)

NAME = "coalescing"
FANS = (1, 10, 100)
#: At smoke size the same code with fewer channels.
SMOKE_FANS = (1, 3, 10)
#: Issue 14: from the finishing poll to the last of 100 channels' posts (full size only), ms.
FANOUT_CHANNELS = 100
FANOUT_LIMIT_MS = 250.0
INTERVAL = 1.0  # bot.backoff.MIN_DELAY: the shortest the schedule allows
TICK = 0.2
#: Requests for one export closer together than this belong to one poll round.
ROUND_GAP = INTERVAL / 2
EVENT_TYPE = "asana_export_finished"
GID_BASE = 1_400_000_000_000_000


def _rounds(times: list[float], gap: float = ROUND_GAP) -> list[list[float]]:
    """Arrival times grouped into poll rounds: a silence longer than `gap` starts a new one."""
    rounds: list[list[float]] = []
    for t in sorted(times):
        if rounds and t - rounds[-1][-1] <= gap:
            rounds[-1].append(t)
        else:
            rounds.append([t])
    return rounds


@dataclass
class FanResult:
    """One export watched by `channels` channels: its steady polls and its fan-out."""

    channels: int
    requests: int
    rounds: int
    largest_round: int
    fanout_s: float | None
    #: From the fake Asana receiving the poll that saw `finished` to the last post.
    after_poll_s: float | None
    posts: int
    finish_requests: int


def _posts_for(slack: Any, gid: str) -> list[Any]:
    """Successful chat.postMessage calls carrying this export's "finished" metadata."""
    found = []
    for call in slack.calls_to("chat.postMessage"):
        meta = call.body.get("metadata")
        if (
            isinstance(meta, dict)
            and meta.get("event_type") == EVENT_TYPE
            and (meta.get("event_payload") or {}).get("gid") == gid
            and call.status == 200
            and (call.response or {}).get("ok")
        ):
            found.append(call)
    return found


def _after_poll(requests: list[Any], posts: list[Any], flip_at: float) -> float | None:
    """From the first request after the flip (the finishing poll) to the last post."""
    polls = [r.at for r in requests if r.at >= flip_at]
    return max(p.at for p in posts) - min(polls) if polls and posts else None


def _fan_result(n: int, requests: list[Any], posts: list[Any], flip_at: float) -> FanResult:
    """Steady polls before the flip grouped into rounds; the fan-out after it."""
    before = [r.at for r in requests if r.at < flip_at]
    rounds = _rounds(before)
    done = len(posts) >= n
    return FanResult(
        channels=n,
        requests=len(before),
        rounds=len(rounds),
        largest_round=max((len(r) for r in rounds), default=0),
        fanout_s=(max(p.at for p in posts) - flip_at) if done else None,
        after_poll_s=_after_poll(requests, posts, flip_at) if done else None,
        posts=len(posts),
        finish_requests=sum(1 for r in requests if r.at >= flip_at),
    )


def run(ctx: Context) -> Section:
    from bot.testing.process import BotProcess

    window = ctx.pick(smoke=1.5, full=15.0)
    workdir = ctx.subdir("coalescing")
    gids = {n: str(GID_BASE + n) for n in ctx.pick(smoke=SMOKE_FANS, full=FANS)}
    results: list[FanResult] = []
    with fakes() as (asana, slack):
        for gid in gids.values():
            asana.set_export(gid, "started", organization_name=BENCH_ORG_NAME)
        start = datetime.now(UTC) + timedelta(seconds=1)
        watches = [
            Watch(gid, f"C{n:04d}{c:04d}", start + timedelta(seconds=INTERVAL * i / len(gids)))
            for i, (n, gid) in enumerate(gids.items())
            for c in range(n)
        ]
        env = bot_env(
            asana,
            slack,
            workdir,
            TICK_SECONDS=str(TICK),
            POLL_INITIAL_SECONDS=str(INTERVAL),
            POLL_MAX_SECONDS=str(INTERVAL),
            POLL_JITTER="0",
        )
        ctx.log(f"coalescing: seeding {len(watches)} watches")
        seed_watches(
            env["DATABASE_URL"], watches, via_subscribe=ctx.pick(smoke=3, full=len(watches))
        )
        bot = BotProcess(workdir, env).start(timeout=60)
        try:
            assert bot.proc is not None
            if not wait_until(lambda: bool(asana.requests), timeout=30):
                raise RuntimeError(f"the bot sent no Asana request within 30 s:\n{bot.logs()}")
            t0 = asana.requests[0].at
            ctx.log(f"coalescing: {window:.0f} s of polls")
            sleep_until(t0 + window)
            cpu = cpu_seconds(bot.proc.pid)
            # Full size: one export at a time, so each fan-out runs alone. Smoke: all at once.
            flips: dict[str, float] = {}
            for n, gid in gids.items():
                asana.set_state(gid, "finished")
                flips[gid] = asana.flip_times(gid)[-1]
                if ctx.size == "full":
                    wait_until(lambda gid=gid, n=n: len(_posts_for(slack, gid)) >= n, timeout=30)
            wait_until(
                lambda: all(len(_posts_for(slack, g)) >= n for n, g in gids.items()), timeout=30
            )
            # A finished export must not be polled again: give a re-poll time to show up.
            time.sleep(INTERVAL + TICK)
            recorded = asana.requests
        finally:
            bot.stop()
    results = [
        _fan_result(n, [r for r in recorded if r.gid == gid], _posts_for(slack, gid), flips[gid])
        for n, gid in gids.items()
    ]
    return _section(results, window, cpu)


def _fmt_ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:,.0f} ms"


def _per_extra(r: FanResult, base: FanResult) -> str:
    """Milliseconds each channel beyond the first adds to the fan-out."""
    if r.after_poll_s is None or base.after_poll_s is None:
        return "n/a"
    return f"{(r.after_poll_s - base.after_poll_s) * 1000 / (r.channels - 1):.1f} ms"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _section(results: list[FanResult], window: float, cpu: float | None) -> Section:
    section = Section(NAME)
    base = results[0]
    per_poll = {r.channels: r.requests / r.rounds if r.rounds else None for r in results}
    one = Target(1, on="value")
    fanout_target = Target(FANOUT_LIMIT_MS, on="value")
    for r in results:
        fig = f"{r.channels} channel{'s' if r.channels > 1 else ''} watching one export"
        section.rows += [
            Row(
                NAME,
                f"Asana requests per poll ({fig})",
                per_poll[r.channels],
                "count",
                per_poll[base.channels],
                one,
            ),
            Row(
                NAME,
                f"finishing poll to last of its 'finished' posts ({fig})",
                _ms(r.after_poll_s),
                "ms",
                _ms(base.after_poll_s),
                fanout_target if r.channels == FANOUT_CHANNELS else None,
            ),
            Row(
                NAME,
                f"Asana requests for the finishing poll ({fig})",
                r.finish_requests,
                "count",
                base.finish_requests,
                one,
            ),
        ]
    section.notes += [
        f"Coalescing: one bot process (SQLite, LOG_LEVEL=INFO) watches {len(results)} exports,"
        f" watched by {', '.join(str(r.channels) for r in results)} channels (seeded with"
        " `Store.subscribe` at full size, no status cards), on a flat schedule: POLL_INITIAL_SECONDS ="
        f" POLL_MAX_SECONDS = {INTERVAL:g} (the shortest the backoff allows), POLL_JITTER=0,"
        f" TICK_SECONDS={TICK:g}. Requests per poll: the fake Asana's requests for each export"
        f" from the bot's first request to the export's flip ({window:g} s of steady polling,"
        " more for the later ones), grouped into rounds (a silence over"
        f" {ROUND_GAP:g} s starts a new round); a bot polling per channel would show N per"
        " round. Largest round per export: "
        + ", ".join(f"N={r.channels}: {r.largest_round}" for r in results)
        + "; rounds (polls) before the flip: "
        + ", ".join(f"N={r.channels}: {r.rounds}" for r in results)
        + ". The baseline column is N=1 in the same process and window.",
        "Fewer rounds than seconds: each poll's next_poll_at is set when it is recorded (after"
        " the request), and the first tick after that claims it, so the period is"
        f" {INTERVAL:g} s plus the wait for a tick (up to {TICK:g} s) plus the poll itself.",
        "Fan-out: after the window each export is flipped to `finished` in turn (waiting for"
        " one fan-out to end before the next flip at full size; all at once at smoke size); the figure is"
        " from the fake Asana receiving the poll that saw it finished to the arrival of the last"
        " of its N 'finished' chat.postMessage calls at the fake Slack: one post per channel,"
        " the first alone, then waves of bot.notify.FANOUT_CONCURRENCY posts at once, each"
        " with a conversations.info (LINK_POLICY=private decides whether the link may appear);"
        " one store write claims a wave and one records its posted ts and ends its watches"
        f" (exactly-once). Issue 14 bounds the {FANOUT_CHANNELS}-channel figure at"
        f" {FANOUT_LIMIT_MS:g} ms (full size only). Per extra channel: "
        + ", ".join(f"N={r.channels}: {_per_extra(r, base)}" for r in results if r.channels > 1)
        + ". From the flip itself (adds the wait for the next poll, up to about"
        f" {INTERVAL + TICK:g} s): "
        + ", ".join(f"N={r.channels}: {_fmt_ms(r.fanout_s)}" for r in results)
        + ". Posts seen: "
        + ", ".join(f"N={r.channels}: {r.posts}" for r in results)
        + ". Asana requests for the finishing poll: requests for the export from its flip on,"
        " i.e. the finishing poll and any after it, counted"
        f" {INTERVAL + TICK:g} s after the last fan-out (1 = one request told all N channels and"
        " the finished export was not polled again).",
        f"Bot CPU from exec to the end of the steady window: {cpu or 0:.1f} s (start-up"
        " included; the fakes run in the benchmark process).",
    ]
    return section
