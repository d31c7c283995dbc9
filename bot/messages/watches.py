"""What the bot says about watching: starting, stopping, pausing, and the list of watches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from bot.messages.blocks import (
    MAX_BLOCKS,
    MAX_SECTION_TEXT,
    Block,
    Message,
    context,
    header,
    message,
    notice,
    section,
)
from bot.messages.mrkdwn import (
    GID_BUDGET,
    channel_mention,
    clip,
    code,
    command_text,
    esc,
    user_mention,
)
from bot.messages.origin import CardOrigin, origin_block, origin_text
from bot.messages.parts import DEFAULT_COMMAND, STATE_EMOJI, org_name, overview, short
from bot.messages.problems import problem_parts
from bot.messages.timefmt import format_relative, format_timestamp, plural
from bot.models import Export, ExportState, ProblemKind

#: Rows shown by `render_watch_list`; the rest are summarised as "and N more".
MAX_LIST_ROWS = 50


@dataclass(frozen=True, slots=True)
class WatchRow:
    """One line of `list`: an export watched by one channel."""

    gid: str
    organization_name: str | None
    state: ExportState
    since: datetime
    user_id: str | None = None
    channel_id: str | None = None
    next_check_at: datetime | None = None


def render_watch_started(export: Export, *, now: datetime, next_check_at: datetime) -> Message:
    """Ephemeral confirmation: this channel now watches the export (the card is in channel)."""
    text = (
        f":eyes: Watching {short(export)} for this channel. I will post a fresh download link"
        " here as soon as it is finished."
    )
    blocks = [
        section(text),
        overview(export, now),
        context(f"Next check {format_relative(next_check_at, now)}"),
    ]
    return message(text, blocks, "ephemeral")


def render_already_watching(
    export: Export, *, now: datetime, command: str = DEFAULT_COMMAND
) -> Message:
    """Ephemeral: asking again does not add a second watch."""
    text = f":eyes: This channel already watches {short(export)}."
    blocks = [
        section(f"{text} `{command_text(command)} list` shows this channel's watches."),
        overview(export, now),
    ]
    return message(text, blocks, "ephemeral")


def render_cannot_post(export: Export, *, now: datetime, error: str | None) -> Message:
    """Ephemeral: the bot may not post in this channel, so it cannot watch here; how to fix it."""
    reason = {
        "not_in_channel": "I am not a member of this channel.",
        "channel_not_found": "I cannot see this channel (it is private or a DM I am not in).",
        "is_archived": "This channel is archived.",
    }.get(error or "", f"Slack refused my message ({esc(error, 60, default='unknown error')}).")
    text = f":no_entry: I cannot watch {short(export)} here: {reason}"
    fix = (
        "Invite me with `/invite @asana-export` (or the channel's *Integrations* tab) and run"
        " the command again."
    )
    return message(text, [section(f"{text}\n{fix}"), overview(export, now)], "ephemeral")


def render_unwatched(gid: str, *, found: bool, command: str = DEFAULT_COMMAND) -> Message:
    """Ephemeral answer to `unwatch`."""
    if found:
        return notice(f":white_check_mark: Stopped watching export {code(gid)} in this channel.")
    return notice(
        f"This channel does not watch export {code(gid)}; nothing to stop."
        f" `{command_text(command)} list` shows what it watches."
    )


def render_card_unwatched(
    export: Export, *, now: datetime, origin: CardOrigin | None = None
) -> Message:
    """The card's last edit when its channel stops watching (still naming its schedule)."""
    text = f":no_bell: No longer watching {short(export)} in this channel."
    return message(
        text + origin_text(origin), [section(text), overview(export, now), origin_block(origin)]
    )


def render_watch_paused(gid: str, kind: ProblemKind, *, command: str = DEFAULT_COMMAND) -> Message:
    """Posted once when a problem that needs a person pauses the watch of an export."""
    what, todo = problem_parts(kind, gid, None)
    stop = f"`{command_text(command)} unwatch {esc(gid, GID_BUDGET)}`"
    text = f":double_vertical_bar: Paused watching export {code(gid)}: {what}"
    blocks = [
        section(
            f"{text}\n{todo} The bot keeps checking now and then and resumes on its own once"
            f" Asana lets it in again; {stop} stops watching."
        )
    ]
    return message(text, blocks)


def _watch_line(row: WatchRow, now: datetime, scope: str) -> str:
    parts = [
        code(row.gid),
        org_name(row.organization_name),
        f"{STATE_EMOJI[row.state]} {row.state.value}",
    ]
    since = f"since {format_timestamp(row.since, now)}"
    who = user_mention(row.user_id)
    if who:
        since += f" by {who}"
    where = channel_mention(row.channel_id)
    if scope == "workspace" and where:
        since += f" in {where}"
    parts.append(since)
    if row.next_check_at is not None and not row.state.is_terminal:
        parts.append(f"next check {format_relative(row.next_check_at, now)}")
    return clip("• " + " · ".join(parts), 1000)


def line_sections(lines: Sequence[str]) -> tuple[list[Block], int]:
    """Pack lines into as few sections as fit; (sections, how many lines were placed)."""
    sections: list[Block] = []
    current: list[str] = []
    placed = 0
    for line in lines:
        if current and len("\n".join([*current, line])) > MAX_SECTION_TEXT:
            if len(sections) >= MAX_BLOCKS - 3:
                break
            sections.append(section("\n".join(current)))
            current = []
        current.append(line)
        placed += 1
    if current:
        sections.append(section("\n".join(current)))
    return sections, placed


def render_watch_list(
    rows: Sequence[WatchRow],
    *,
    now: datetime,
    scope: Literal["channel", "workspace"],
    command: str = DEFAULT_COMMAND,
    withheld: int = 0,
) -> Message:
    """Ephemeral list of watched exports, in the caller's order; long lists end in "and N more".

    `withheld` watches (in channels the asker is not in) are counted, never named.
    """
    where = "this channel" if scope == "channel" else "this workspace"
    title = header(f"Watched exports in {where}")
    note = (
        context(
            f"{withheld} more {'watch is' if withheld == 1 else 'watches are'} not shown:"
            " they are in channels you are not a member of."
        )
        if withheld
        else None
    )
    if not rows:
        text = (
            f"No exports are watched in {where}"
            + (" that you can see" if withheld else "")
            + f". Use `{command_text(command)} watch &lt;gid&gt;` to watch one."
        )
        return message(text, [title, section(text), note], "ephemeral")
    sections, placed = line_sections([_watch_line(r, now, scope) for r in rows[:MAX_LIST_ROWS]])
    hidden = len(rows) - placed
    blocks: list[Block | None] = [title, *sections]
    if hidden:
        blocks.append(context(f"…and {hidden} more."))
    blocks.append(note)
    return message(f"{plural(len(rows), 'export')} watched in {where}.", blocks, "ephemeral")
