"""What the bot says when something went wrong or a request is refused, and what to do about it."""

from __future__ import annotations

from typing import Literal, Protocol

from bot.messages.blocks import Block, Message, context, message, notice, section
from bot.messages.mrkdwn import (
    ASANA_MESSAGE_BUDGET,
    GID_BUDGET,
    code,
    command_text,
    esc,
)
from bot.messages.parts import DEFAULT_COMMAND
from bot.messages.timefmt import format_seconds, plural
from bot.models import ProblemKind


def problem_parts(kind: ProblemKind, gid: str | None, retry_after: float | None) -> tuple[str, str]:
    """(what went wrong, what to do) for a problem, in the user's terms."""
    export = f"export {code(gid)}" if gid is not None else "the export"
    match kind:
        case ProblemKind.NOT_FOUND:
            return (
                f"No export with gid {code(gid)} that this bot's Asana token can see."
                if gid is not None
                else "Asana found no such export.",
                "Check the gid from the export request (the `gid` in Asana's answer to"
                " `POST /organization_exports`).",
            )
        case ProblemKind.UNAUTHORIZED:
            return (
                "The bot's Asana token is invalid or revoked.",
                "An admin must set a new `ASANA_TOKEN` for the bot.",
            )
        case ProblemKind.PAYMENT_REQUIRED:
            return (
                "Asana refused: organization exports need an Enterprise or Enterprise+"
                " organization.",
                "The bot's `ASANA_TOKEN` must be a Service Account token of such an organization.",
            )
        case ProblemKind.FORBIDDEN:
            return (
                f"The bot's Asana token has no access to {export}.",
                "Exports can be read only with a Service Account token of the export's"
                " organization; an admin must set `ASANA_TOKEN` to one.",
            )
        case ProblemKind.RATE_LIMITED:
            wait = format_seconds(retry_after)
            return (
                "Asana is rate limiting this bot.",
                f"Try again in {wait}." if wait else "Try again in a minute.",
            )
        case ProblemKind.ASANA_DOWN:
            return (
                "Asana is having trouble (it answered with a server error).",
                "Try again in a few minutes.",
            )
        case ProblemKind.TIMEOUT:
            return ("Asana did not answer in time.", "Try again in a minute.")
        case ProblemKind.CONNECTION:
            return (
                "The bot could not connect to Asana.",
                "Try again in a minute; if it keeps happening, an admin should check the bot's"
                " network access to app.asana.com.",
            )
        case ProblemKind.MALFORMED:
            return (
                "Asana sent an answer this bot could not understand.",
                "Try again; if it keeps happening, an admin should check the bot's logs.",
            )
        case ProblemKind.BAD_REQUEST:
            return (
                f"Asana rejected the request for {export} as invalid.",
                "Check the gid: it is the number Asana returned when the export was requested.",
            )
    return ("Asana reported a problem.", "Try again later.")  # pragma: no cover - enum is closed


def render_problem(
    kind: ProblemKind,
    *,
    gid: str | None,
    asana_message: str | None = None,
    retry_after: float | None = None,
) -> Message:
    """Ephemeral: what went wrong talking to Asana and what the user (or an admin) can do."""
    what, todo = problem_parts(kind, gid, retry_after)
    blocks: list[Block | None] = [section(f":warning: *{what}*\n{todo}")]
    if asana_message and asana_message.strip():
        blocks.append(context(f"Asana said: “{esc(asana_message.strip(), ASANA_MESSAGE_BUDGET)}”"))
    return message(f":warning: {what} {todo}", blocks, "ephemeral")


def render_lookup_timeout(gid: str, waited: float) -> Message:
    """The late answer when Asana never replied."""
    waited_s = format_seconds(waited) or "the time allowed"
    return notice(
        f":hourglass: Asana did not answer within {waited_s} while looking up export"
        f" {code(gid)}. Try again in a minute."
    )


def render_working(what: str) -> Message:
    """The immediate ack when a command's answer needs Slack or Asana longer than Slack allows."""
    return notice(f":hourglass_flowing_sand: Working on `{what}`…")


def render_work_timeout(what: str, waited: float) -> Message:
    """The late answer when that work never finished."""
    waited_s = format_seconds(waited) or "the time allowed"
    return notice(
        f":hourglass: `{what}` did not finish within {waited_s} (Slack or Asana is slow)."
        " Try again in a minute."
    )


def render_internal_error() -> Message:
    """What the user sees when the bot itself broke: better than Slack's "operation_timeout"."""
    return notice(
        ":warning: Something went wrong inside the bot. Try again; if it keeps happening,"
        " ask an admin to check the bot's logs."
    )


def render_database_unavailable(
    doing: Literal["watch", "unwatch", "list", "create", "schedule"], gid: str | None = None
) -> Message:
    """Ephemeral: the bot's database cannot be used (its file was deleted), so nothing was done."""
    what = {
        "watch": f"start watching export {code(gid)}",
        "unwatch": f"stop watching export {code(gid)}",
        "list": "list the watches",
        "create": "start an export",
        "schedule": "change the schedules",
    }[doing]
    return notice(
        f":warning: The bot's database is unavailable, so I did not {what}."
        " Tell whoever runs the bot: its log says what happened, and it needs a restart."
    )


def render_refused(*, what: str = "use this bot") -> Message:
    """Ephemeral, polite: access control said no (ALLOWED_USERS / ALLOWED_CHANNELS)."""
    return notice(
        f":lock: Sorry, you cannot {what} here. An admin of this bot decides who may use it and"
        " in which channels; ask them to add you or this channel."
    )


def render_link_withheld(
    gid: str, *, foreign_user: bool, command: str = DEFAULT_COMMAND
) -> Message:
    """Ephemeral, polite: "Get a fresh link" gives no link to this clicker here, and what to do."""
    if foreign_user:
        return notice(
            ":lock: Sorry, download links go only to members of the organization that installed"
            " this bot. Ask one of them for the export through your organizations' usual way of"
            " sharing files."
        )
    return notice(
        ":lock: This channel is shared with another organization (or Slack would not tell me"
        " whether it is), so I do not hand out download links here. Ask me in a DM with me"
        " or in a private channel of your organization:"
        f" `{command_text(command)} {esc(gid, GID_BUDGET)}`."
    )


def render_slow_down(*, busy: bool, retry_after: int, per_minute: float | None = None) -> Message:
    """Ephemeral: a fair-use limit said not now (no Asana call was made); when to try again."""
    wait = plural(max(1, int(retry_after)), "second")
    if busy:
        return notice(
            f":hourglass_flowing_sand: Asana is busy right now; try again in {wait}."
            " (The bot keeps part of its Asana budget for watched exports.)"
        )
    limit = f"{per_minute:g} " if per_minute else ""
    return notice(
        f":hourglass_flowing_sand: You have made {limit}requests in the last minute, the most"
        f" one person may; try again in {wait}."
    )


class FairUseRefusal(Protocol):
    """The shape of `bot.fair_use.Refusal`, which this package may not import (it imports only
    models): why (`"busy"` or `"user"`, a `Limit` is a str enum) and whole seconds to wait."""

    @property
    def limit(self) -> str: ...

    @property
    def retry_after(self) -> int: ...


def render_fair_use_refusal(refusal: FairUseRefusal, *, per_minute: float | None) -> Message:
    """`render_slow_down` for a refusal as the fair-use limiter returns it, so a handler that was
    refused says so in one call; `per_minute` is USER_REQUESTS_PER_MINUTE."""
    return render_slow_down(
        busy=refusal.limit == "busy", retry_after=refusal.retry_after, per_minute=per_minute
    )


def render_watch_cap(
    gid: str, *, scope: Literal["user", "channel"], cap: int, command: str = DEFAULT_COMMAND
) -> Message:
    """Ephemeral: a new watch would pass MAX_WATCHES_PER_USER/_CHANNEL; how to free room."""
    cmd = command_text(command)
    who = "You already watch" if scope == "user" else "This channel already watches"
    return notice(
        f":no_entry: Not watching export {code(gid)}: {who} {plural(cap, 'export')}, the most"
        f" allowed. Stop one with `{cmd} unwatch &lt;gid&gt;` (`{cmd} list`"
        + (" all" if scope == "user" else "")
        + " shows them), then try again."
    )
