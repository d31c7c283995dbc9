"""Ack latency of `/asana-export <gid>`: the real bot in HTTP mode against a minimal Bolt app.

Signed slash commands (pre-signed here, sent by `bench.loadgen` in its own process) go to the
baseline, then to the bot with the fake Asana answering in 50 ms, then to the same bot with the
fake Asana hanging. The bot answers a lookup inside the ack when Asana is quicker than
ACK_DEADLINE_SECONDS, so its ack includes Asana's 50 ms by design; issue 14's p99 target is
therefore on our p99 against the baseline's p99 plus those 50 ms, not on the plain p99.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import (
    Context,
    Row,
    Section,
    Target,
    baseline_bolt,
    bot_env,
    fakes,
    median,
    percentile,
    python_module,
    run_json,
)

NAME = "ack latency"
GID = "1200000000000001"
#: A finished export is only shown, never watched: the lookup path without the store.
GID_FINISHED = "1200000000000009"
ORG_NAME = "Acme Benchmarks"
ASANA_DELAY = 0.05
HANG_DELAY = 30.0
#: A hung lookup is given up soon after the ack, so hung requests do not pile up in the bot.
LOOKUP_TIMEOUT = 2.5
SLACK_LIMIT_MS = 3000.0
#: Fair-use limits far above the load (README "Fair use"); the refusal path is not measured here.
FAIR_USE_OFF = {"POLL_BUDGET_PER_MINUTE": "100000", "USER_REQUESTS_PER_MINUTE": "10000"}
P99_RATIO_TARGET = 1.3
#: Issue 14: server CPU per command at most this times a bare Bolt ack's.
CPU_RATIO_TARGET = 3.0
#: The measured phases (baseline, started, finished) run in this many alternating rounds.
ROUNDS = 3


def _requests(slack: Any, count: int, path: Path, gid: str = GID) -> Path:
    """`count` signed `/asana-export <gid>` requests, each with its own response_url, as JSON."""
    from bot.demo.signing import form_body, signed_headers, slash_command_form
    from bot.testing.process import SIGNING_SECRET

    items = []
    for _ in range(count):
        body = form_body(slash_command_form(text=gid, response_url=slack.new_response_url()))
        items.append(
            {"body": body.decode(), "headers": signed_headers(body, secret=SIGNING_SECRET)}
        )
    path.write_text(json.dumps(items))
    return path


def _load(
    ctx: Context,
    url: str,
    requests: Path,
    label: str,
    pids: dict[str, int],
    asana: Any,
    slack: Any,
    *,
    warmup: int,
) -> dict[str, Any]:
    """Run the load generator against `url`; returns its report with latencies in ms.

    `per_request` counts what the server sent the fakes per request of the phase (warm-up
    included): Asana lookups and Slack Web API calls by method.
    """
    asana_before, slack_before = len(asana.requests), len(slack.calls)
    spec = {
        "url": url,
        "requests": str(requests),
        "concurrency": ctx.pick(smoke=10, full=50),
        "warmup": warmup,
        "timeout": 15.0,
        "classify": [["looking_up", "Looking up"], ["answer", ORG_NAME]],
        "watch_pids": pids,
    }
    spec_path = ctx.subdir("ack") / f"spec-{label.replace('/', ' of ')}.json"
    spec_path.write_text(json.dumps(spec))
    ctx.log(f"ack latency: {label}")
    report = run_json(python_module("bench.loadgen", str(spec_path)), timeout=300)
    report["ms"] = [x * 1000 for x in report.pop("latencies")]
    sent = warmup + len(report["ms"])
    counts = Counter(call.method for call in slack.calls[slack_before:])
    counts["Asana GET"] = len(asana.requests) - asana_before
    report["per_request"] = {name: count / sent for name, count in counts.items() if count}
    report["warmup"] = warmup
    return report


def _merged(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One phase's rounds as one report: latencies, counts, walls and CPU added up; the CPU
    per request of each round kept, for their median."""
    merged: dict[str, Any] = {
        "ms": [x for r in reports for x in r["ms"]],
        "wall": sum(r["wall"] for r in reports),
        "client_cpu": sum(r["client_cpu"] for r in reports),
        "statuses": dict(sum((Counter(r["statuses"]) for r in reports), Counter())),
        "classes": dict(sum((Counter(r["classes"]) for r in reports), Counter())),
        "cpu": {},
        "cpu_per_request": {},
    }
    for name in reports[0]["cpu"]:
        found = [r["cpu"].get(name) for r in reports]
        if all(cpu is not None for cpu in found):
            merged["cpu"][name] = sum(found)
            merged["cpu_per_request"][name] = median(
                [cpu * 1000 / len(r["ms"]) for cpu, r in zip(found, reports, strict=True)]
            )
    sent = sum(len(r["ms"]) + r["warmup"] for r in reports)
    calls = Counter[str]()
    for r in reports:
        calls.update({k: v * (len(r["ms"]) + r["warmup"]) for k, v in r["per_request"].items()})
    merged["per_request"] = {k: v / sent for k, v in calls.items()}
    return merged


def _failed(report: dict[str, Any]) -> int:
    return sum(n for status, n in report["statuses"].items() if status != "200")


def _cpu_ms_per_request(report: dict[str, Any], name: str) -> float | None:
    """The median of the rounds' CPU per request where there were rounds."""
    if name in report.get("cpu_per_request", {}):
        return float(report["cpu_per_request"][name])
    cpu = report["cpu"].get(name)
    return None if cpu is None else cpu * 1000 / len(report["ms"])


def run(ctx: Context) -> Section:
    from bot.testing.process import BotProcess, free_port

    n, warmup = ctx.pick(smoke=40, full=2000), ctx.pick(smoke=10, full=200)
    hang_n = ctx.pick(smoke=10, full=2000)
    workdir = ctx.subdir("ack")
    section = Section(NAME)
    me = os.getpid()
    with fakes() as (asana, slack):
        asana.set_export(GID, "started", organization_name=ORG_NAME)
        asana.set_export(GID_FINISHED, "finished", organization_name=ORG_NAME)
        asana.set_delay(ASANA_DELAY)
        env = bot_env(
            asana,
            slack,
            workdir,
            LOOKUP_TIMEOUT_SECONDS=str(LOOKUP_TIMEOUT),
            # Thousands of lookups from one user: measure the lookup, not the fair-use refusal.
            **FAIR_USE_OFF,
        )

        bot = BotProcess(workdir, env).start()
        try:
            paced_env = {**env, "BASELINE_ACK_DELAY": str(ASANA_DELAY)}
            with (
                baseline_bolt(workdir, env, free_port()) as base_proc,
                baseline_bolt(workdir, paced_env, free_port()) as paced_proc,
            ):
                assert bot.proc is not None
                servers = {
                    "baseline": (base_proc.events_url, base_proc.pid, GID),
                    "baseline, paced": (paced_proc.events_url, paced_proc.pid, GID),
                    "ours, Asana 50 ms": (bot.events_url, bot.proc.pid, GID),
                    "ours, Asana 50 ms, finished": (bot.events_url, bot.proc.pid, GID_FINISHED),
                }
                rounds: dict[str, list[dict[str, Any]]] = {label: [] for label in servers}
                for r in range(ROUNDS):  # alternating, so the machine's drift hits all alike
                    for label, (url, pid, gid) in servers.items():
                        path = workdir / f"requests-{len(rounds[label])}-{gid}-{pid}.json"
                        requests = _requests(slack, warmup + n // ROUNDS, path, gid)
                        pids = {"server": pid, "fakes": me}
                        tag = f"{label} (round {r + 1}/{ROUNDS})"
                        rounds[label].append(
                            _load(ctx, url, requests, tag, pids, asana, slack, warmup=warmup)
                        )
            base, paced, ours, done = (_merged(found) for found in rounds.values())
            asana.set_delay(HANG_DELAY)
            requests = _requests(slack, warmup + hang_n, workdir / "requests-hang.json")
            pids = {"server": bot.proc.pid, "fakes": me}
            hang = _load(
                ctx,
                bot.events_url,
                requests,
                "ours, Asana hanging",
                pids,
                asana,
                slack,
                warmup=warmup,
            )
        finally:
            bot.stop()

    bp99, op99 = percentile(base["ms"], 99), percentile(ours["ms"], 99)
    dp99 = percentile(done["ms"], 99)
    slack_limit = Target(SLACK_LIMIT_MS, on="value")
    zero = Target(0, on="value")
    p99_target, cpu_target = Target(P99_RATIO_TARGET), Target(CPU_RATIO_TARGET)
    fig = f"Asana {ASANA_DELAY * 1000:.0f} ms"
    vs_p99 = f"p99 vs baseline p99 + {ASANA_DELAY * 1000:.0f} ms"
    section.rows += [
        Row(NAME, f"p50 ({fig})", percentile(ours["ms"], 50), "ms", percentile(base["ms"], 50)),
        Row(NAME, f"p99 ({fig})", op99, "ms", bp99),
        Row(NAME, f"{vs_p99} ({fig})", op99, "ms", bp99 + ASANA_DELAY * 1000, p99_target),
        Row(NAME, f"max ({fig})", max(ours["ms"]), "ms", max(base["ms"]), slack_limit),
        Row(
            NAME,
            f"requests/s ({fig})",
            len(ours["ms"]) / ours["wall"],
            "req/s",
            len(base["ms"]) / base["wall"],
        ),
        Row(
            NAME,
            f"server CPU per request ({fig})",
            _cpu_ms_per_request(ours, "server"),
            "ms",
            _cpu_ms_per_request(paced, "server"),
            cpu_target,
        ),
        Row(
            NAME,
            f"server CPU per request ({fig}) vs a bare ack at its own saturation",
            _cpu_ms_per_request(ours, "server"),
            "ms",
            _cpu_ms_per_request(base, "server"),
        ),
        Row(NAME, f"non-200 answers ({fig})", _failed(ours), "count", _failed(base), zero),
        Row(NAME, f"p99 ({fig}, finished export: no watch)", dp99, "ms", bp99),
        Row(
            NAME,
            f"{vs_p99} ({fig}, finished export: no watch)",
            dp99,
            "ms",
            bp99 + ASANA_DELAY * 1000,
            p99_target,
        ),
        Row(
            NAME,
            f"requests/s ({fig}, finished export: no watch)",
            len(done["ms"]) / done["wall"],
            "req/s",
            len(base["ms"]) / base["wall"],
        ),
        Row(
            NAME,
            f"server CPU per request ({fig}, finished export: no watch)",
            _cpu_ms_per_request(done, "server"),
            "ms",
            _cpu_ms_per_request(paced, "server"),
            cpu_target,
        ),
        Row(
            NAME,
            f"server CPU per request ({fig}, finished export: no watch) vs a bare ack at its own saturation",
            _cpu_ms_per_request(done, "server"),
            "ms",
            _cpu_ms_per_request(base, "server"),
        ),
        Row(
            NAME,
            f"max ({fig}, finished export: no watch)",
            max(done["ms"]),
            "ms",
            max(base["ms"]),
            slack_limit,
        ),
        Row(
            NAME,
            "p50 (Asana hanging)",
            percentile(hang["ms"], 50),
            "ms",
            baseline_note="see notes",
        ),
        Row(NAME, "p99 (Asana hanging)", percentile(hang["ms"], 99), "ms", baseline_note="—"),
        Row(NAME, "max (Asana hanging)", max(hang["ms"]), "ms", target=slack_limit),
        Row(NAME, "non-200 answers (Asana hanging)", _failed(hang), "count", target=zero),
    ]
    section.notes += _notes(base, paced, ours, done, hang, n, hang_n, warmup)
    return section


def _cpu_share(report: dict[str, Any]) -> str:
    """How busy the two cores were during a phase, per process."""
    wall = report["wall"]
    parts = {**report["cpu"], "load generator": report["client_cpu"]}
    shown = ", ".join(f"{name} {cpu / wall:.0%}" for name, cpu in parts.items() if cpu is not None)
    total = sum(cpu for cpu in parts.values() if cpu is not None) / wall
    return f"{shown} of one core; together {total:.0%} (the machine has {(os.cpu_count() or 1) * 100}%)"


def _notes(
    base: dict[str, Any],
    paced: dict[str, Any],
    ours: dict[str, Any],
    done: dict[str, Any],
    hang: dict[str, Any],
    n: int,
    hang_n: int,
    warmup: int,
) -> list[str]:
    return [
        f"Ack latency: {len(ours['ms'])} signed `/asana-export {GID}` requests per phase, in"
        f" {ROUNDS} rounds that alternate the baseline, the paced baseline, the started export and"
        " the finished one"
        f" (each round after {warmup} unmeasured warm-up requests), so a drift of the shared"
        " machine's speed hits all alike; percentiles are over all rounds, CPU per"
        " request is the median of the rounds'. Sent by `bench.loadgen` (aiohttp client, its"
        " own process, keep-alive) at the stated concurrency; latency is from sending to the"
        " whole answer read. The hanging phase is one run at the end."
        " All come from one user, so the fair-use limits are set far above the load"
        " (POLL_BUDGET_PER_MINUTE=100000, USER_REQUESTS_PER_MINUTE=10000): the lookup path is"
        " measured, not the refusal."
        " The bot runs as `asana-export-bot run` in HTTP mode with LOG_LEVEL=INFO and SQLite; the"
        " baseline is `bench.baseline_bolt` (Bolt AsyncApp + aiohttp adapter, same signing secret,"
        " ack only). Each runs alone while it is measured.",
        f"The export `{GID}` is `started`, so each command also records the channel's watch"
        " (a SQLite write transaction; every request comes from the same channel, so after the"
        f" first it already watches). `{GID_FINISHED}` is `finished`: shown, never watched, so"
        " its rows are the lookup path without the store.",
        f"With Asana at {ASANA_DELAY * 1000:.0f} ms the bot answers inside the ack (ack classes:"
        f" {ours['classes']}, finished: {done['classes']}), so each ack waits for one Asana"
        " round trip by design."
        " Acks over ACK_DEADLINE_SECONDS are the 'Looking up…' kind. So the p99 target (issue 14:"
        f" ratio ≤ {P99_RATIO_TARGET}) is on the rows 'p99 vs baseline p99 +"
        f" {ASANA_DELAY * 1000:.0f} ms', whose baseline adds Asana's own latency to the bare"
        " ack's p99; the plain p99 rows compare an answer with a bare ack and carry no target."
        f" Server CPU per request: target ratio ≤ {CPU_RATIO_TARGET:g} to the bare ack's, under"
        " the same load.",
        "Which bare ack, for CPU per request: the same closed-loop load (the same concurrency)"
        f" runs a bare ack at its own saturation ({len(base['ms']) / base['wall']:,.0f} req/s,"
        f" server {_busy(base):.0%} busy), where each wake-up of its event loop serves many"
        " requests at once, and ours at the rate Asana's 50 ms allow"
        f" ({len(ours['ms']) / ours['wall']:,.0f} req/s, server {_busy(ours):.0%} busy), where"
        " more requests pay a wake-up of their own: the same code costs more per request below"
        " saturation. So the target's baseline is the bare ack paced like ours: the same Bolt"
        f" app acking after a {ASANA_DELAY * 1000:.0f} ms `asyncio.sleep` (BASELINE_ACK_DELAY; a"
        " timer, no work), at"
        f" {len(paced['ms']) / paced['wall']:,.0f} req/s, server {_busy(paced):.0%} busy. The"
        " rows 'vs a bare ack at its own saturation' keep the comparison with the unpaced one.",
        f"With Asana hanging ({HANG_DELAY:.0f} s) every ack is the 'Looking up…' one sent at"
        " ACK_DEADLINE_SECONDS (2.0 s default), so p50/p99 sit at that deadline by design (ack"
        f" classes: {hang['classes']}; {hang_n} requests); a bare-ack baseline has no comparable"
        f" figure. LOOKUP_TIMEOUT_SECONDS={LOOKUP_TIMEOUT} ends each hung lookup soon after, so"
        " lookups do not pile up.",
        "CPU during the measured phase — baseline: "
        + _cpu_share(base)
        + "; baseline, paced: "
        + _cpu_share(paced)
        + "; ours at 50 ms: "
        + _cpu_share(ours)
        + "; ours, finished export: "
        + _cpu_share(done)
        + "; ours hanging: "
        + _cpu_share(hang)
        + ". 'fakes' is this benchmark process, where the fake Asana and fake Slack run as"
        " threads.",
        "Calls the server made to the fakes per request (warm-up included) — started export: "
        + _per_request(ours)
        + "; finished export: "
        + _per_request(done)
        + "; Asana hanging: "
        + _per_request(hang)
        + "; baseline: "
        + _per_request(base)
        + ".",
        _limit(
            {
                "baseline": base,
                "baseline, paced": paced,
                "ours (started)": ours,
                "ours (finished)": done,
            }
        ),
    ]


def _busy(report: dict[str, Any]) -> float:
    """The server's CPU over the phase's wall time, as a share of one core."""
    cpu = report["cpu"].get("server")
    return 0.0 if cpu is None else float(cpu) / float(report["wall"])


def _per_request(report: dict[str, Any]) -> str:
    calls = report["per_request"]
    return ", ".join(f"{name} {n:.3g}" for name, n in sorted(calls.items())) or "none"


def _limit(reports: dict[str, dict[str, Any]]) -> str:
    """Which servers were CPU-bound (an asyncio server uses one core at most), and what that
    means for their latency (their busy shares are in the note on the baselines)."""
    bound = [label for label, report in reports.items() if _busy(report) >= 0.85]
    if not bound:
        return "Limit: no server was CPU-bound (85 % of one core or more)."
    return (
        f"Limit: {', '.join(bound)} CPU-bound (85 % of one core or more), so requests/s follows"
        " CPU per request and p50/p99 are mostly queueing behind the other requests in flight"
        " (about concurrency x CPU per request, plus Asana's own latency for ours)."
    )
