"""The baseline: a minimal Bolt AsyncApp on the bot's server stack whose slash command only acks.

Same stack as the bot (aiohttp web server, Bolt's aiohttp adapter, request signature checks with
the same secret, a Web API client on the same fake Slack), none of our code. It also serves
`GET /healthz`, so start-up is measured the same way. Run: `python -m bench.baseline_bolt`
with PORT, SLACK_SIGNING_SECRET, SLACK_BOT_TOKEN and SLACK_API_URL in the environment.

With BASELINE_ACK_DELAY=S the command acks after S seconds of `asyncio.sleep` (no work: a
timer), so under a closed-loop load it runs at the request rate of an app whose answer waits
for Asana, in the same regime, not at its own saturation.

With BASELINE_POSTS=N the command also makes N chat.postMessage calls into its channel after
the ack, through one pooled slack_sdk client: the floor of a command that must post (a new
watch posts its card and an audit line), as plainly as Bolt's own tools allow.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient


def build(env: dict[str, str]) -> web.Application:
    """The aiohttp application: POST /slack/events into Bolt, GET /healthz."""
    bolt = AsyncApp(
        client=AsyncWebClient(token=env["SLACK_BOT_TOKEN"], base_url=env["SLACK_API_URL"]),
        signing_secret=env["SLACK_SIGNING_SECRET"],
    )

    posts = int(env.get("BASELINE_POSTS", "0"))
    delay = float(env.get("BASELINE_ACK_DELAY", "0"))
    poster: list[AsyncWebClient] = []  # made in the running loop, on first use

    @bolt.command(env.get("SLACK_COMMAND", "/asana-export"))
    async def on_command(ack: AsyncAck, command: dict[str, Any]) -> None:
        if delay:
            await asyncio.sleep(delay)
        await ack()
        if posts and not poster:
            poster.append(
                AsyncWebClient(
                    token=env["SLACK_BOT_TOKEN"],
                    base_url=env["SLACK_API_URL"],
                    session=aiohttp.ClientSession(),
                )
            )
        for i in range(posts):
            await poster[0].chat_postMessage(
                channel=command["channel_id"],
                text=f"Post {i + 1} of {posts}",
                blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": f"*Post {i + 1}*"}}],
            )

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/slack/events", events)
    app.router.add_get("/healthz", health)
    return app


def main() -> None:
    env = dict(os.environ)
    web.run_app(build(env), host="127.0.0.1", port=int(env["PORT"]), access_log=None, print=None)


if __name__ == "__main__":
    main()
