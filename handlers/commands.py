"""`/asana-export` listener: parse, answer inside Slack's ack deadline, or ack and respond later."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.request.async_request import AsyncBoltRequest

from bot import audit, creating, lookup, messages, scheduling, watching
from bot.command_parser import (
    Command,
    Help,
    Invalid,
    ListSchedules,
    ListWatches,
    Lookup,
    New,
    Schedule,
    Unschedule,
    Unwatch,
    Watch,
    parse_command,
)
from bot.db import DatabaseUnavailable
from bot.messages import Message
from bot.metrics import TimedAck
from bot.runtime import Runtime
from handlers.acking import returns_at_ack

log = logging.getLogger(__name__)


async def answer_in_time(
    ack: AsyncAck,
    respond: AsyncRespond,
    work: Awaitable[Message],
    *,
    deadline: float,
    total: float,
    placeholder: Callable[[], Message],
    on_timeout: Callable[[], Message],
) -> None:
    """Ack with the answer if `work` is done within `deadline`; else ack `placeholder` and
    deliver the answer with respond() when it is ready (or `on_timeout` after `total`).

    The two fallbacks are rendered only when needed: most answers come in time, and rendering
    them for every command was a measurable share of its CPU. `work` is awaited in this task,
    with one timer for the deadline (which acks the placeholder and only then sets the time
    limit of `total`): a task, a shield and a wait_for per command were another share.
    A TimeoutError from `work` itself counts as running out of time, as with wait_for.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    late: asyncio.Future[Any] | None = None  # the placeholder's ack, once past the deadline
    limit = asyncio.timeout(None)

    async def ack_placeholder() -> None:  # rendered in the task: an error surfaces at `late`
        await ack(**placeholder().to_ack())

    def past_deadline() -> None:
        nonlocal late
        limit.reschedule(max(started + total, loop.time() + 0.1))
        late = asyncio.ensure_future(ack_placeholder())

    timer = loop.call_later(deadline, past_deadline)
    answer: Message | None = None
    try:
        async with limit:
            answer = await work
    except TimeoutError:
        pass
    finally:
        timer.cancel()
        if late is not None:
            await late  # the placeholder is Slack's answer before anything else is sent
    if late is None:
        if answer is not None:
            await ack(**answer.to_ack())
            return
        await ack(**placeholder().to_ack())
    await respond(**(answer if answer is not None else on_timeout()).to_ack())


def register(app: AsyncApp, runtime: Runtime) -> None:
    """Attach the slash command listener to `app`."""
    settings = runtime.settings
    name = settings.SLACK_COMMAND

    @app.command(name)
    @returns_at_ack
    async def on_command(
        ack: AsyncAck, respond: AsyncRespond, command: dict[str, Any], request: AsyncBoltRequest
    ) -> None:
        ack = TimedAck(ack, runtime.metrics.ack_seconds.observe)  # type: ignore[assignment]
        parsed = parse_command(command.get("text"))
        team_id = str(command.get("team_id") or "")
        channel_id = str(command.get("channel_id") or "")
        user_id = str(command.get("user_id") or "")
        if not isinstance(parsed, Help | Invalid) and not settings.allows(user_id, channel_id):
            log.warning(
                "refused %s by user %s in channel %s (ALLOWED_USERS/ALLOWED_CHANNELS)",
                type(parsed).__name__,
                user_id[:20],
                channel_id[:20],
            )
            await ack(**messages.render_refused().to_ack())
            return

        async def in_time(
            work: Awaitable[Message],
            placeholder: Callable[[], Message],
            late: Callable[[], Message],
        ) -> None:
            """Whatever Slack or Asana take, ack inside Slack's 3 s (see answer_in_time)."""
            await answer_in_time(
                ack,
                respond,
                work,
                deadline=settings.ACK_DEADLINE_SECONDS,
                total=settings.LOOKUP_TIMEOUT_SECONDS,
                placeholder=placeholder,
                on_timeout=late,
            )

        def working(verb: str) -> tuple[Callable[[], Message], Callable[[], Message]]:
            """Placeholder and timeout answer of a command that may wait on Slack (users.info)."""
            return (
                lambda: messages.render_working(verb),
                lambda: messages.render_work_timeout(verb, settings.LOOKUP_TIMEOUT_SECONDS),
            )

        try:
            match parsed:
                case Lookup(gid) | Watch(gid):
                    await in_time(
                        lookup.look_up_and_watch(
                            runtime, gid, team_id=team_id, channel_id=channel_id, user_id=user_id
                        ),
                        lambda: messages.render_looking_up(gid),
                        lambda: messages.render_lookup_timeout(
                            gid, settings.LOOKUP_TIMEOUT_SECONDS
                        ),
                    )
                case New(org_gid, force):
                    org = org_gid or settings.ASANA_ORGANIZATION_GID or "?"
                    await in_time(
                        # Shielded: a slow Asana must not cut a POST (and its record) in half.
                        asyncio.shield(
                            creating.new_for_person(
                                runtime,
                                org_gid=org_gid,
                                force=force,
                                team_id=team_id,
                                channel_id=channel_id,
                                user_id=user_id,
                                key=_request_key(command, request, team_id, channel_id, user_id),
                            )
                        ),
                        lambda: messages.render_creating(org),
                        lambda: messages.render_create_timeout(
                            org, settings.LOOKUP_TIMEOUT_SECONDS
                        ),
                    )
                case Unwatch(gid):
                    answer, ended = await watching.stop_watching(
                        runtime, team_id=team_id, channel_id=channel_id, gid=gid
                    )
                    await ack(**answer.to_ack())
                    if ended is not None:
                        await runtime.notify.mark_unwatched(ended)
                        audit.stopped_watching(runtime, ended, user_id=user_id)
                case ListWatches(workspace):
                    answer = await watching.list_watches(
                        runtime,
                        team_id=team_id,
                        channel_id=None if workspace else channel_id,
                        asked_in=channel_id,
                        user_id=user_id,
                    )
                    await ack(**answer.to_ack())
                case Schedule(spec):
                    ids = dict(team_id=team_id, channel_id=channel_id, user_id=user_id)
                    await in_time(
                        scheduling.create_schedule(runtime, spec, **ids), *working("schedule")
                    )
                case ListSchedules(workspace):
                    answer = await scheduling.list_schedules(
                        runtime,
                        team_id=team_id,
                        channel_id=None if workspace else channel_id,
                        asked_in=channel_id,
                        user_id=user_id,
                    )
                    await ack(**answer.to_ack())
                case Unschedule(schedule_id):
                    await in_time(
                        scheduling.remove_schedule(
                            runtime, schedule_id, team_id=team_id, user_id=user_id
                        ),
                        *working("unschedule"),
                    )
                case Help():
                    await ack(**messages.render_help(name).to_ack())
                case Invalid(problem):
                    await ack(**messages.render_usage(problem, command=name).to_ack())
        except DatabaseUnavailable as exc:
            # Its file is gone: nothing was written, and the user should hear that plainly.
            log.error("command %s refused: %s", type(parsed).__name__, exc)
            answer = _database_unavailable(parsed).to_ack()
            await (respond(**answer) if ack.response is not None else ack(**answer))
        except Exception:
            # Whatever broke, the user gets an answer instead of Slack's "operation_timeout".
            log.exception("command %s failed", type(parsed).__name__)
            answer = messages.render_internal_error().to_ack()
            await (respond(**answer) if ack.response is not None else ack(**answer))


def _header(request: AsyncBoltRequest, name: str) -> str:
    values = request.headers.get(name) if request.headers else None
    return str(values[0]) if values else ""


def _request_key(
    command: dict[str, Any],
    request: AsyncBoltRequest,
    team_id: str,
    channel_id: str,
    user_id: str,
) -> str:
    """The replay key of this command; a Slack retry (X-Slack-Retry-Num) is logged as such."""
    retry = _header(request, "x-slack-retry-num")
    if retry:
        log.info("Slack retried a command (X-Slack-Retry-Num %s)", retry[:8])
    return creating.request_key(
        team_id=team_id,
        user_id=user_id,
        channel_id=channel_id,
        text=str(command.get("text") or ""),
        trigger_id=str(command.get("trigger_id") or ""),
        timestamp=_header(request, "x-slack-request-timestamp"),
    )


def _database_unavailable(parsed: Command) -> Message:
    match parsed:
        case New():
            return messages.render_database_unavailable("create")
        case Unwatch(gid):
            return messages.render_database_unavailable("unwatch", gid)
        case ListWatches() | ListSchedules():
            return messages.render_database_unavailable("list")
        case Schedule() | Unschedule():
            return messages.render_database_unavailable("schedule")
        case Lookup(gid) | Watch(gid):
            return messages.render_database_unavailable("watch", gid)
    return messages.render_internal_error()
