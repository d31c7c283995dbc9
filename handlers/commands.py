"""`/asana-export` listener: parse, look up under Slack's ack deadline, answer."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond

from bot import messages
from bot.asana import AsanaError
from bot.command_parser import Help, Invalid, ListWatches, Lookup, Unwatch, Watch, parse_command
from bot.models import LINK_VALIDITY, Export
from bot.runtime import Runtime

log = logging.getLogger(__name__)


async def _answer_for(runtime: Runtime, export: Export) -> messages.Message:
    now = runtime.now()
    return messages.render_export(export, now=now, link_valid_until=now + LINK_VALIDITY)


def _problem(exc: AsanaError, gid: str) -> messages.Message:
    return messages.render_problem(
        exc.kind, gid=gid, asana_message=exc.message, retry_after=exc.retry_after
    )


async def lookup(runtime: Runtime, gid: str, ack: AsyncAck, respond: AsyncRespond) -> None:
    """Answer in the ack when Asana is quick; otherwise ack at once and respond when it answers."""
    settings = runtime.settings
    started = time.monotonic()
    task = asyncio.ensure_future(runtime.asana.get_export(gid))
    try:
        export = await asyncio.wait_for(asyncio.shield(task), settings.ACK_DEADLINE_SECONDS)
    except TimeoutError:
        pass
    except AsanaError as exc:
        log.info("lookup of export %s failed: %s", gid, exc.kind)
        await ack(**_problem(exc, gid).to_ack())
        return
    else:
        await ack(**(await _answer_for(runtime, export)).to_ack())
        return

    await ack(**messages.render_looking_up(gid).to_ack())
    remaining = settings.LOOKUP_TIMEOUT_SECONDS - (time.monotonic() - started)
    try:
        export = await asyncio.wait_for(task, max(remaining, 0.1))
    except TimeoutError:
        log.info("lookup of export %s timed out after %.1fs", gid, time.monotonic() - started)
        answer = messages.render_lookup_timeout(gid, time.monotonic() - started)
    except AsanaError as exc:
        log.info("lookup of export %s failed: %s", gid, exc.kind)
        answer = _problem(exc, gid)
    else:
        answer = await _answer_for(runtime, export)
    await respond(**answer.to_ack())


def register(app: AsyncApp, runtime: Runtime) -> None:
    """Attach the slash command listener to `app`."""
    command_name = runtime.settings.SLACK_COMMAND

    @app.command(command_name)
    async def on_command(ack: AsyncAck, respond: AsyncRespond, command: dict[str, Any]) -> None:
        parsed = parse_command(command.get("text"))
        try:
            match parsed:
                case Lookup(gid):
                    await lookup(runtime, gid, ack, respond)
                case Help():
                    await ack(**messages.render_help(command_name).to_ack())
                case Invalid(problem):
                    await ack(**messages.render_usage(problem, command=command_name).to_ack())
                case Watch() | Unwatch() | ListWatches():
                    await ack(
                        **messages.render_usage(
                            "Watching is not available yet.", command=command_name
                        ).to_ack()
                    )
        except Exception:
            # Whatever broke, the user gets an answer instead of Slack's "operation_timeout".
            log.exception("command %s failed", type(parsed).__name__)
            answer = messages.render_internal_error().to_ack()
            await (respond(**answer) if ack.response is not None else ack(**answer))
