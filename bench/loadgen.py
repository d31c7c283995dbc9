"""Load generator in its own process, so its CPU does not starve the fakes' threads or the server.

`python -m bench.loadgen SPEC.json` reads pre-signed requests (`[{"body", "headers"}]`), sends
the first `warmup` of them (not measured), then the rest at `concurrency` in flight over
keep-alive connections, and prints one JSON line: every measured latency (seconds, from send to
the whole response read), status counts, body classes, wall time and its own CPU time.

Spec keys: url, requests (path of the JSON list), concurrency, warmup, timeout (per request),
classify (list of [name, substring]: a body is counted under the first name whose substring it
contains, else "other"), watch_pids ({name: pid}: processes whose CPU time during the measured
phase is reported, read from /proc).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import cpu_seconds


async def _send_all(
    session: aiohttp.ClientSession,
    url: str,
    requests: list[tuple[bytes, dict[str, str]]],
    concurrency: int,
    classify: list[tuple[str, str]],
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    classes: Counter[str] = Counter()
    pending = iter(requests)

    async def worker() -> None:
        for body, headers in pending:  # one shared iterator: each request is sent once
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    text = await resp.text()
                    status = str(resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                text, status = "", type(exc).__name__
            latencies.append(time.perf_counter() - started)
            statuses[status] += 1
            classes[next((name for name, sub in classify if sub in text), "other")] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return {
        "latencies": latencies,
        "statuses": dict(statuses),
        "classes": dict(classes),
        "wall": wall,
    }


async def run(spec: dict[str, Any], raw: list[dict[str, Any]]) -> dict[str, Any]:
    requests = [(r["body"].encode(), r["headers"]) for r in raw]  # encoded before the clock
    warmup, concurrency = int(spec["warmup"]), int(spec["concurrency"])
    classify = [(str(name), str(sub)) for name, sub in spec.get("classify", [])]
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=float(spec.get("timeout", 15.0)))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if warmup:
            await _send_all(session, spec["url"], requests[:warmup], concurrency, classify)
        watched = {name: int(pid) for name, pid in spec.get("watch_pids", {}).items()}
        before = {name: cpu_seconds(pid) for name, pid in watched.items()}
        cpu = time.process_time()
        result = await _send_all(session, spec["url"], requests[warmup:], concurrency, classify)
        result["client_cpu"] = time.process_time() - cpu
        after = {name: cpu_seconds(pid) for name, pid in watched.items()}
        result["cpu"] = {
            name: (after[name] - before[name])
            if after[name] is not None and before[name] is not None
            else None
            for name in watched
        }
    return result


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    raw = json.loads(Path(spec["requests"]).read_text())
    print(json.dumps(asyncio.run(run(spec, raw))))


if __name__ == "__main__":
    main()
