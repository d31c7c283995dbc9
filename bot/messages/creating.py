"""What the bot says about starting an export (`new`): started, refused, unknown, offered."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bot.messages.blocks import Block, Message, actions, button, context, message, notice, section
from bot.messages.mrkdwn import ASANA_MESSAGE_BUDGET, code, command_text, esc, user_mention
from bot.messages.parts import DEFAULT_COMMAND, overview, short
from bot.messages.timefmt import format_relative, format_seconds
from bot.models import Export, ProblemKind

#: The "Watch it instead" button of the running-export offer; its value is the export's gid.
WATCH_INSTEAD_ACTION = "watch_instead"


def _org(org_gid: str) -> str:
    return f"organization {code(org_gid)}"


def render_creating(org_gid: str) -> Message:
    """The ack while Asana has not answered yet; the answer follows through response_url."""
    return notice(f":hourglass_flowing_sand: Asking Asana to start an export of {_org(org_gid)}…")


def render_created(export: Export, watch_answer: Message) -> Message:
    """Ephemeral: Asana started the export (its gid), then what watching it here said."""
    head = f":rocket: Asana started export {code(export.gid)}."
    return message(
        f"{head} {watch_answer.text}", [section(head), *watch_answer.blocks], "ephemeral"
    )


def refusal_parts(kind: ProblemKind, org: str, retry_after: float | None) -> tuple[str, str]:
    """(what Asana said no to, what to do), for a creation that certainly did not happen."""
    match kind:
        case ProblemKind.BAD_REQUEST:
            return (
                f"Asana rejected the request to export {org} as invalid.",
                "Check the organization gid: it is the number of the Asana organization"
                " (workspace), not of an export or a project.",
            )
        case ProblemKind.UNAUTHORIZED:
            return (
                "Asana did not accept the bot's token (missing, wrong or revoked).",
                "An admin must set a new `ASANA_TOKEN` for the bot.",
            )
        case ProblemKind.PAYMENT_REQUIRED:
            return (
                f"Asana refused: {org} is not on a plan with organization exports.",
                "Organization exports need an Enterprise or Enterprise+ organization.",
            )
        case ProblemKind.FORBIDDEN:
            return (
                f"Asana refused to export {org}: the bot's token is not a Service Account"
                " token, or not an admin of that organization.",
                "An admin must set `ASANA_TOKEN` to a Service Account token of that organization.",
            )
        case ProblemKind.NOT_FOUND:
            return (
                f"Asana knows no {org} (or the bot's token cannot see it).",
                "Check the organization gid (`ASANA_ORGANIZATION_GID`, or the one you named).",
            )
        case ProblemKind.RATE_LIMITED:
            wait = format_seconds(retry_after)
            return (
                "Asana is rate limiting this bot.",
                f"Try again in {wait}." if wait else "Try again in a minute.",
            )
    return (
        "The bot could not reach Asana.",
        "Try again in a minute; if it keeps happening, an admin should check the bot's logs.",
    )


def render_create_refused(
    kind: ProblemKind,
    *,
    org_gid: str,
    asana_message: str | None = None,
    retry_after: float | None = None,
) -> Message:
    """Ephemeral: no export was started, why (in plain words) and what to do."""
    what, todo = refusal_parts(kind, _org(org_gid), retry_after)
    blocks: list[Block | None] = [section(f":warning: *{what}*\n{todo}\nNo export was started.")]
    if asana_message and asana_message.strip():
        blocks.append(context(f"Asana said: “{esc(asana_message.strip(), ASANA_MESSAGE_BUDGET)}”"))
    return message(f":warning: {what} {todo} No export was started.", blocks, "ephemeral")


def render_create_unknown(org_gid: str, *, command: str = DEFAULT_COMMAND) -> Message:
    """Ephemeral: the request may have reached Asana, whose answer never came (or was garbled).

    Asana cannot list an organization's exports, so the bot cannot find out; asking again
    could start a second export, so it does not, and says so.
    """
    return notice(
        f":grey_question: I asked Asana to export {_org(org_gid)}, but its answer never came"
        " (or made no sense), so I do not know whether an export was started, and I will not"
        " ask again by myself: a second request would start a second export. If you need one,"
        f" run `{command_text(command)} new --force` again."
    )


def render_create_timeout(org_gid: str, waited: float) -> Message:
    """The late answer when the request took longer than LOOKUP_TIMEOUT_SECONDS."""
    waited_s = format_seconds(waited) or "the time allowed"
    return notice(
        f":grey_question: Asana did not answer within {waited_s} while starting an export of"
        f" {_org(org_gid)}, so I do not know yet whether it started one. If it did, its card"
        " will appear in this channel."
    )


def render_running_offer(
    export: Export,
    *,
    requested_by: str | None,
    requested_at: datetime,
    now: datetime,
    command: str = DEFAULT_COMMAND,
) -> Message:
    """Ephemeral: an export of this organization started through the bot is still running."""
    who = user_mention(requested_by)
    by = f" by {who}" if who else ""
    text = (
        f":information_source: {short(export)} was started{by}"
        f" {format_relative(requested_at, now)} and is still running. Watch it instead?"
    )
    blocks: list[Block | None] = [
        section(text),
        overview(export, now),
        actions(
            button(
                "Watch it instead",
                action_id=WATCH_INSTEAD_ACTION,
                value=export.gid,
                style="primary",
            )
        ),
        context(f"`{command_text(command)} new --force` starts another export anyway."),
    ]
    return message(text, blocks, "ephemeral")


def render_already_handled(export_gid: str | None) -> Message:
    """Ephemeral: this very command was received before (a Slack retry or a replayed request)."""
    done = (
        f" It started export {code(export_gid)}."
        if export_gid
        else " Its answer comes from the first delivery."
    )
    return notice(
        ":repeat: Slack delivered this command again; I handled it the first time and will not"
        " start a second export." + done
    )


def render_no_organization(command: str = DEFAULT_COMMAND) -> Message:
    """Ephemeral: `new` without an organization, and none is configured."""
    return notice(
        ":warning: Which organization? Name it: `"
        f"{command_text(command)} new &lt;organization gid&gt;`, or ask whoever runs the bot to"
        " set `ASANA_ORGANIZATION_GID`."
    )


def render_not_admin(admin_users: Sequence[str], *, unknown: bool = False) -> Message:
    """Ephemeral, polite: starting an export is for the admins, and who they are."""
    mentions = [m for m in (user_mention(u) for u in sorted(admin_users)) if m]
    if mentions:
        who = ", ".join(mentions[:20]) + (" and others" if len(mentions) > 20 else "")
    else:
        who = "the workspace's admins and owners"
    lead = (
        ":lock: Sorry, I could not check with Slack whether you are a workspace admin, so I did"
        " not start an export."
        if unknown
        else ":lock: Sorry, exporting a whole organization is for admins only."
    )
    tail = " Ask one of them, or try again in a minute." if unknown else " Ask one of them."
    return notice(f"{lead} Who can: {who}.{tail}")
