"""Run one Asana client alone in this process and report its CPU time, so the fake's is not counted.

`python -m bench.client_worker IMPL BASE_URL TOKEN GID CALLS WARMUP CONCURRENCY` prints one JSON
line: {"impl", "calls", "cpu", "wall", "ok"}. IMPL is `ours` (bot.asana.AsanaClient, asyncio) or
`sdk` (the official `asana` SDK v5, threads when CONCURRENCY > 1). CONCURRENCY 1 means sequential
calls; CPU is `time.process_time()` over the measured calls only (warm-up excluded).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

OPT_FIELDS = "state,organization,organization.name,created_at,download_url"


def _measure(run: Callable[[int], int], calls: int, warmup: int) -> dict[str, float]:
    run(warmup)
    cpu, wall = time.process_time(), time.perf_counter()
    ok = run(calls)
    return {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall, "ok": ok}


def ours(base_url: str, token: str, gid: str, calls: int, warmup: int, conc: int) -> dict:
    from bot.asana import AsanaClient

    async def main() -> dict[str, float]:
        async with AsanaClient(token, base_url) as client:
            sem = asyncio.Semaphore(conc)

            async def one() -> bool:
                async with sem:
                    export = await client.get_export(gid)
                return export.gid == gid

            async def batch(n: int) -> int:
                if conc == 1:
                    return sum([(await client.get_export(gid)).gid == gid for _ in range(n)])
                return sum(await asyncio.gather(*(one() for _ in range(n))))

            await batch(warmup)
            cpu, wall = time.process_time(), time.perf_counter()
            ok = await batch(calls)
            return {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall, "ok": ok}

    return asyncio.run(main())


def sdk(base_url: str, token: str, gid: str, calls: int, warmup: int, conc: int) -> dict:
    import asana

    config = asana.Configuration()
    config.host = base_url
    config.access_token = token
    config.connection_pool_maxsize = max(conc, 1)  # one pooled connection per thread, like ours
    api = asana.OrganizationExportsApi(asana.ApiClient(config))
    opts: dict[str, Any] = {"opt_fields": OPT_FIELDS}

    def one(_: int = 0) -> bool:
        return api.get_organization_export(gid, opts)["gid"] == gid

    if conc == 1:
        return _measure(lambda n: sum(one() for _ in range(n)), calls, warmup)
    with ThreadPoolExecutor(max_workers=conc) as pool:
        return _measure(lambda n: sum(pool.map(one, range(n))), calls, warmup)


def main() -> None:
    impl, base_url, token, gid = sys.argv[1:5]
    calls, warmup, conc = (int(x) for x in sys.argv[5:8])
    result = {"ours": ours, "sdk": sdk}[impl](base_url, token, gid, calls, warmup, conc)
    print(json.dumps({"impl": impl, "calls": calls, **result}))


if __name__ == "__main__":
    main()
