"""GET /healthz (liveness) and /readyz (readiness), served by the real aiohttp app.

/healthz answers 200 while the process serves, whatever its dependencies do; /readyz answers
503 naming the failing part. The real process's parts: tests/test_readyz.py.
"""

from __future__ import annotations

from typing import Any

import httpx
from aiohttp import web

from bot.app import build_web_app
from bot.config import Settings
from bot.readiness import Part, judge, scheduler_part
from bot.testing.process import free_port


async def _serve(ready) -> tuple[web.AppRunner, str]:
    def status() -> dict[str, Any]:
        return {"replica": "r1", "slack_paused": None}

    app = build_web_app(None, Settings(ASANA_TOKEN="x"), status, ready=ready)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def test_health_is_liveness_and_readyz_names_the_failing_part() -> None:
    async def ready() -> tuple[bool, dict[str, Any]]:
        return judge([Part("database", False, "database file is gone"), Part("slack", True, "ok")])

    runner, base = await _serve(ready)
    try:
        async with httpx.AsyncClient() as client:
            health = await client.get(f"{base}/healthz")
            readyz = await client.get(f"{base}/readyz")
            events = await client.post(f"{base}/slack/events")
    finally:
        await runner.cleanup()
    assert health.status_code == 200, "liveness does not depend on the database"
    assert health.json()["ok"] is True and health.json()["replica"] == "r1"
    assert readyz.status_code == 503
    body = readyz.json()
    assert body["ready"] is False and body["failing"] == ["database"], body
    assert body["parts"]["database"] == {"ok": False, "detail": "database file is gone"}
    assert body["parts"]["slack"]["ok"] is True
    assert events.status_code == 404, "no Slack endpoint without a Bolt app (Socket Mode)"


async def test_readyz_is_503_when_the_check_itself_fails() -> None:
    async def ready() -> tuple[bool, dict[str, Any]]:
        raise ConnectionRefusedError("database down")

    runner, base = await _serve(ready)
    try:
        async with httpx.AsyncClient() as client:
            readyz = await client.get(f"{base}/readyz")
            health = await client.get(f"{base}/healthz")
    finally:
        await runner.cleanup()
    assert readyz.status_code == 503
    assert readyz.json()["ready"] is False and readyz.json()["error"] == "ConnectionRefusedError"
    assert health.status_code == 200


def test_scheduler_part_is_late_after_a_few_ticks_never_sooner_than_the_floor() -> None:
    assert scheduler_part(False, 0.0, 1.0) == Part("scheduler", False, "not running")
    assert scheduler_part(True, 4.9, 0.2).ok, "5 s floor: a busy moment is not a dead scheduler"
    assert not scheduler_part(True, 5.1, 0.2).ok
    assert scheduler_part(True, 29.0, 10.0).ok
    assert not scheduler_part(True, 31.0, 10.0).ok
