"""GET /healthz: readiness that reflects the database, served by the real aiohttp app."""

from __future__ import annotations

from typing import Any

import httpx
from aiohttp import web

from bot.app import build_web_app
from bot.config import Settings
from bot.testing.process import free_port


async def _serve(status) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(build_web_app(None, Settings(ASANA_TOKEN="x"), status))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/healthz"


async def test_health_reports_status() -> None:
    async def status() -> dict[str, Any]:
        return {"watches": 3, "due": 1}

    runner, url = await _serve(status)
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(url)
    finally:
        await runner.cleanup()
    assert response.status_code == 200
    assert response.json()["ok"] is True and response.json()["watches"] == 3


async def test_health_is_503_when_the_database_fails() -> None:
    async def status() -> dict[str, Any]:
        raise ConnectionRefusedError("database down")

    runner, url = await _serve(status)
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(url)
            events = await client.post(url.replace("healthz", "slack/events"))
    finally:
        await runner.cleanup()
    assert response.status_code == 503
    assert response.json() == {
        "ok": False,
        "version": response.json()["version"],
        "error": "ConnectionRefusedError",
    }
    assert events.status_code == 404, "no Slack endpoint without a Bolt app (Socket Mode)"
