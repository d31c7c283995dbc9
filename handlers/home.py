"""App Home listeners: publish the home tab when opened, its buttons, the "New export" modal.

A click in the home tab has no response_url and no channel: its outcome is shown at the top of
the clicker's home, published again (`bot.home`). Bolt acks events by itself; every click is
acked first. The modal's submission is the one answer that must wait for checks: errors go back
in the ack (`response_action: errors`) inside Slack's 3 s, and the export starts after the ack.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot import home, messages
from bot.access import payload_team_id
from bot.runtime import Runtime
from handlers.acking import returns_at_ack

log = logging.getLogger(__name__)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _user(body: dict[str, Any]) -> str:
    user = body.get("user")
    return _str(user.get("id")) if isinstance(user, dict) else ""


def _team(body: dict[str, Any]) -> str:
    """The workspace the click or event came from (Grid's org-wide payloads included)."""
    return _str(payload_team_id(body))


def _value(body: dict[str, Any]) -> Any:
    actions = body.get("actions")
    first = actions[0] if isinstance(actions, list) and actions else None
    return first.get("value") if isinstance(first, dict) else None


async def _refresh(runtime: Runtime, team_id: str, user_id: str, notice: str | None) -> None:
    """Publish the clicker's home again, with the outcome of the click on top."""
    if not user_id:
        log.info("ignored a home click without a user")
        return
    await home.publish(runtime, team_id=team_id, user_id=user_id, notice=notice)


async def _after_click(
    runtime: Runtime, body: dict[str, Any], work: Awaitable[str | None] | str | None
) -> None:
    """Run a click's work (or take its notice) and publish the home with the outcome on top;
    a failure is logged and said, never raised."""
    team_id, user_id = _team(body), _user(body)
    try:
        notice = work if work is None or isinstance(work, str) else await work
    except Exception:
        log.exception("home click failed")
        notice = messages.render_internal_error().text
    try:
        await _refresh(runtime, team_id, user_id, notice)
    except Exception:  # Slack's own refusals were sorted by the notifier; this is ours
        log.exception("publishing the home of user %s failed", user_id[:20])


def register(app: AsyncApp, runtime: Runtime) -> None:
    """Attach the App Home listeners to `app` (before the catch-all of `handlers.actions`)."""
    settings = runtime.settings

    @app.event("app_home_opened")
    @returns_at_ack
    async def on_home_opened(event: dict[str, Any], body: dict[str, Any]) -> None:
        if event.get("tab", "home") != "home":
            return  # the Messages tab: nothing to publish
        user_id = _str(event.get("user"))
        try:
            await _refresh(runtime, _team(body), user_id, None)
        except Exception:
            log.exception("publishing the home of user %s failed", user_id[:20])

    @app.action(messages.REFRESH_ACTION)
    @returns_at_ack
    async def on_refresh(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        await _after_click(runtime, body, None)

    @app.action(messages.UNWATCH_ACTION)
    @returns_at_ack
    async def on_unwatch(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        work = home.unwatch(runtime, _value(body), team_id=_team(body), user_id=_user(body))
        await _after_click(runtime, body, work)

    @app.action(messages.REMOVE_SCHEDULE_ACTION)
    @returns_at_ack
    async def on_remove_schedule(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        work = home.remove_schedule(runtime, _value(body), team_id=_team(body), user_id=_user(body))
        await _after_click(runtime, body, work)

    @app.action(messages.NEW_EXPORT_ACTION)
    @returns_at_ack
    async def on_new_export(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        user_id, trigger_id = _user(body), _str(body.get("trigger_id"))
        if not home.user_allowed(runtime, user_id):
            await _after_click(runtime, body, None)
            return
        try:
            # A trigger_id is good for 3 s: a slow users.info must not outlive it.
            notice = await asyncio.wait_for(
                home.new_export_clicked(runtime, trigger_id, team_id=_team(body), user_id=user_id),
                settings.ACK_DEADLINE_SECONDS,
            )
        except TimeoutError:
            notice = messages.render_work_timeout("New export", settings.ACK_DEADLINE_SECONDS).text
        except Exception:
            log.exception("opening the New export modal failed")
            notice = messages.render_internal_error().text
        if notice is not None:  # refused, or Slack would not open the modal: say so
            await _after_click(runtime, body, notice)

    @app.view(messages.NEW_EXPORT_CALLBACK)
    @returns_at_ack
    async def on_new_export_submitted(ack: AsyncAck, body: dict[str, Any]) -> None:
        team_id, user_id = _team(body), _user(body)
        view = body.get("view") if isinstance(body.get("view"), dict) else {}
        org_block = messages.ORG_INPUT[0]
        try:
            checked = await asyncio.wait_for(
                home.check_submission(runtime, view, team_id=team_id, user_id=user_id),
                settings.ACK_DEADLINE_SECONDS,
            )
        except TimeoutError:
            checked = {org_block: "Slack did not answer in time; please submit again."}
        except Exception:
            log.exception("checking the New export form failed")
            checked = {org_block: "Something went wrong on my side; please try again."}
        if isinstance(checked, dict):
            await ack(response_action="errors", errors=checked)
            return
        await ack()  # closes the modal; the outcome appears atop the home
        work = asyncio.shield(
            home.start_new_export(
                runtime,
                checked,
                team_id=team_id,
                user_id=user_id,
                trigger_id=_str(body.get("trigger_id")),
            )
        )
        await _after_click(runtime, body, work)
