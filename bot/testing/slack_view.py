"""Send slash commands to a bot process and read what it posted to the fake Slack."""

from __future__ import annotations

import json
from typing import Any

from bot.demo.fake_slack import FakeSlack
from bot.demo.signing import SignedResponse, post_slash_command
from bot.testing.process import SIGNING_SECRET, BotProcess

FINISHED_EVENT = "asana_export_finished"
#: Audit lines (bot.audit) and stall notes (bot.stall): `posts` leaves them out.
AUDIT_EVENT = "asana_export_audit"
STALL_EVENT = "asana_export_stalled"
#: Slack's own deadline for an ack.
ACK_SECONDS = 3.0


def slash(bot: BotProcess, slack: FakeSlack, text: str, **fields: Any) -> SignedResponse:
    """One signed slash command to the bot's HTTP endpoint, as Slack sends it; the raw answer.

    `fields` go to `slash_command_form` (channel_id, user_id, ...); a fresh response_url on the
    fake Slack unless one is given.
    """
    fields["response_url"] = fields.get("response_url") or slack.new_response_url()
    return post_slash_command(bot.events_url, secret=SIGNING_SECRET, text=text, **fields)


def command(
    bot: BotProcess, slack: FakeSlack, text: str, channel: str = "C0001", **fields: Any
) -> dict[str, Any]:
    """A slash command that must be acked with 200 inside Slack's 3 seconds; the ack's JSON."""
    response = slash(bot, slack, text, channel_id=channel, **fields)
    assert response.status == 200, response.body_text
    assert response.elapsed < ACK_SECONDS, response.elapsed
    return json.loads(response.body_text)


def posts(slack: FakeSlack, channel: str | None = None) -> list[dict[str, Any]]:
    """Bodies of the chat.postMessage calls Slack accepted, oldest first; audit lines and stall
    notes (thread replies about a watch) are left out: see `event_posts`."""
    return [
        c.body
        for c in slack.calls_to("chat.postMessage")
        if c.ok
        and (channel is None or c.body.get("channel") == channel)
        and (c.body.get("metadata") or {}).get("event_type") not in (AUDIT_EVENT, STALL_EVENT)
    ]


def event_posts(slack: FakeSlack, event: str, channel: str | None = None) -> list[dict[str, Any]]:
    """Accepted posts whose message metadata names `event` (asana_export_finished, ...)."""
    return [
        c.body
        for c in slack.calls_to("chat.postMessage")
        if c.ok
        and (channel is None or c.body.get("channel") == channel)
        and (c.body.get("metadata") or {}).get("event_type") == event
    ]


def finished_posts(slack: FakeSlack, channel: str | None = None) -> list[dict[str, Any]]:
    """Accepted "your export is ready" posts, oldest first."""
    return event_posts(slack, FINISHED_EVENT, channel)


def text_of(body: dict[str, Any]) -> str:
    """Fallback text plus the blocks as JSON, for content assertions."""
    return str(body.get("text", "")) + "\n" + json.dumps(body.get("blocks", []))
