"""The App Home tab: a pure renderer from what one person may see to a Block Kit view.

A view holds up to 100 blocks (a message 50), so the home has its own budget: the fixed parts
first, then the schedules (up to MAX_HOME_SCHEDULES), then as many watches as still fit; a cut
list ends with how many are not shown and a pointer to `list all` / `schedules all`. Each watch
and each schedule is one section with its button as the accessory, so a button always names
what it acts on (its value is the subscription or schedule id, checked again on click).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from bot.messages.blocks import Block, button, context, header, section
from bot.messages.mrkdwn import (
    GID_BUDGET,
    PROBLEM_BUDGET,
    channel_mention,
    clip,
    code,
    command_text,
    esc,
    user_mention,
)
from bot.messages.parts import DEFAULT_COMMAND, STATE_EMOJI, org_name
from bot.messages.schedules import ScheduleLine
from bot.messages.timefmt import as_utc, format_absolute, format_relative, format_timestamp, plural
from bot.messages.views import MAX_VIEW_BLOCKS, View, confirm_dialog
from bot.messages.watches import line_sections
from bot.models import EndReason, ExportState

#: Schedules shown before "…and N more"; the watches get the rest of the budget.
MAX_HOME_SCHEDULES = 15
#: Watches shown at most (fewer when the budget is short).
MAX_HOME_WATCHES = 60
#: Ended watches shown (the last ones, newest first).
MAX_HOME_ENDED = 20

HOME_CALLBACK = "asana_export_home"
UNWATCH_ACTION = "home_unwatch"
REMOVE_SCHEDULE_ACTION = "home_remove_schedule"
NEW_EXPORT_ACTION = "home_new_export"
REFRESH_ACTION = "home_refresh"


@dataclass(frozen=True, slots=True)
class HomeWatch:
    """One channel's active watch of an export, as the home lists it."""

    subscription_id: int
    gid: str
    organization_name: str | None
    state: ExportState
    channel_id: str
    user_id: str
    since: datetime
    next_check_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class EndedWatch:
    """A watch that ended: when, and why (`subscriptions.end_reason`)."""

    gid: str
    organization_name: str | None
    channel_id: str
    user_id: str
    ended_at: datetime
    end_reason: str | None


@dataclass(frozen=True, slots=True)
class ArchiveSummary:
    """One export's archive as the home shows it (filled from the archiving part's query)."""

    gid: str
    state: str
    at: datetime
    location: str | None = None


@dataclass(frozen=True, slots=True)
class HomeContent:
    """Everything one person's home shows, already filtered by what they may see."""

    watches: Sequence[HomeWatch] = ()
    schedules: Sequence[ScheduleLine] = ()
    ended: Sequence[EndedWatch] = ()
    #: Archive summaries; None (archiving off) or empty renders no Archive section.
    archives: Sequence[ArchiveSummary] | None = None
    #: Items in channels the viewer is not a member of: counted, never named.
    withheld: int = 0
    #: Whether the viewer may start exports (the "New export" button).
    may_create: bool = False
    #: The outcome of the viewer's last click, already safe mrkdwn (our renderers' text).
    notice: str | None = None
    #: ALLOWED_USERS says no: the home says so and shows nothing else.
    refused: bool = False


def _watch_block(watch: HomeWatch, now: datetime) -> Block:
    where = channel_mention(watch.channel_id) or code(watch.channel_id)
    who = user_mention(watch.user_id) or code(watch.user_id)
    parts = [
        f"{code(watch.gid)} · {org_name(watch.organization_name)}",
        f"{STATE_EMOJI[watch.state]} {watch.state.value} · in {where} · asked by {who}",
        f"since {format_timestamp(watch.since, now)}",
    ]
    if watch.next_check_at is not None and not watch.state.is_terminal:
        parts[-1] += f" · next check {format_relative(watch.next_check_at, now)}"
    block = section("\n".join(parts))
    block["block_id"] = f"watch_{watch.subscription_id}"
    unwatch = button("Unwatch", action_id=UNWATCH_ACTION, value=str(watch.subscription_id))
    unwatch["confirm"] = confirm_dialog(
        "Stop watching?",
        f"{where} will no longer be told when export {code(watch.gid)} is ready.",
        "Unwatch",
    )
    block["accessory"] = unwatch
    return block


def _schedule_block(row: ScheduleLine, now: datetime) -> Block:
    where = channel_mention(row.channel_id) or code(row.channel_id)
    who = user_mention(row.created_by) or code(row.created_by)
    head = f"*#{row.id}* {code(row.when, 120)} ({esc(row.timezone, 64)}) · org {code(row.organization_gid)}"
    if row.paused_reason:
        nxt = f":double_vertical_bar: paused: {esc(row.paused_reason, PROBLEM_BUDGET)}"
    elif row.next_at is not None:
        nxt = f"next {format_absolute(row.next_at)} ({format_relative(row.next_at, now)})"
    else:
        nxt = "no next occurrence"
    block = section(f"{head}\nin {where} · by {who} · {nxt}")
    block["block_id"] = f"schedule_{row.id}"
    remove = button("Remove", action_id=REMOVE_SCHEDULE_ACTION, value=str(row.id), style="danger")
    remove["confirm"] = confirm_dialog(
        "Remove schedule?", f"No more exports will start from schedule #{row.id}.", "Remove"
    )
    block["accessory"] = remove
    return block


def end_label(reason: str | None) -> str:
    """Why a watch ended, in a few words with an emoji (Slack's own error codes kept)."""
    match reason:
        case EndReason.FINISHED:
            return ":white_check_mark: finished"
        case EndReason.EXPORT_FAILED:
            return ":x: failed"
        case EndReason.EXPORT_NOT_FOUND:
            return ":wastebasket: gone"
        case EndReason.UNWATCHED:
            return ":no_bell: unwatched"
    if reason and reason.startswith("slack_"):
        return f":no_entry: channel lost ({code(reason.removeprefix('slack_'), 60)})"
    return f":grey_question: {esc(reason, 60, default='ended')}"


def _ended_line(ended: EndedWatch, now: datetime) -> str:
    where = channel_mention(ended.channel_id) or code(ended.channel_id)
    return clip(
        f"• {end_label(ended.end_reason)} · {code(ended.gid)} · {org_name(ended.organization_name)}"
        f" · in {where} · {format_timestamp(ended.ended_at, now)}",
        1000,
    )


def archive_section(summaries: Sequence[ArchiveSummary] | None, *, now: datetime) -> list[Block]:
    """The Archive section (shown where ARCHIVE_URL is set); nothing for None or an empty list."""
    if not summaries:
        return []
    lines = [
        f"• {code(a.gid, GID_BUDGET)} · {esc(a.state, 40)} · {format_timestamp(a.at, now)}"
        + (f" · {code(a.location, 300)}" if a.location else "")
        for a in summaries[:MAX_HOME_ENDED]
    ]
    sections, placed = line_sections(lines)
    blocks = [header("Archive"), *sections[:2]]
    if len(summaries) > placed:
        blocks.append(context(f"…and {len(summaries) - placed} more."))
    return blocks


def _more(hidden: int, what: str, where: str) -> Block:
    return context(f"…and {hidden} more {what} not shown here: {where} lists them all.")


def render_home(content: HomeContent, *, now: datetime, command: str = DEFAULT_COMMAND) -> View:
    """One person's App Home: active watches, schedules, archive, recently ended; buttons."""
    cmd = command_text(command)
    top: list[Block] = [header("Asana organization exports")]
    if content.notice:
        top.append(section(content.notice))
    if content.refused:
        text = (
            ":lock: Sorry, you cannot use this bot. An admin of this bot decides who may use it;"
            " ask them to add you."
        )
        return View("home", [*top, section(text)], {"callback_id": HOME_CALLBACK})
    controls = [button("Refresh", action_id=REFRESH_ACTION)]
    if content.may_create:
        controls.insert(0, button("New export", action_id=NEW_EXPORT_ACTION, style="primary"))
    top.append(
        context(
            f"This workspace's watches and schedules that you can see, as of"
            f" {format_absolute(now)}. `{cmd} help` lists the commands."
        )
    )
    top.append({"type": "actions", "block_id": "home_controls", "elements": controls})

    schedules: list[Block] = [{"type": "divider"}, header(f"Schedules ({len(content.schedules)})")]
    if not content.schedules:
        schedules.append(context(f"No schedules. `{cmd} schedule weekly mon 02:00` starts one."))
    ordered = sorted(
        content.schedules,
        key=lambda r: (r.next_at is None, r.next_at and as_utc(r.next_at), r.id),
    )
    schedules += [_schedule_block(r, now) for r in ordered[:MAX_HOME_SCHEDULES]]
    if len(ordered) > MAX_HOME_SCHEDULES:
        schedules.append(
            _more(len(ordered) - MAX_HOME_SCHEDULES, "schedules", f"`{cmd} schedules all`")
        )

    archive = archive_section(content.archives, now=now)

    ended: list[Block] = [{"type": "divider"}, header("Recently ended")]
    if content.ended:
        lines = [_ended_line(e, now) for e in content.ended[:MAX_HOME_ENDED]]
        sections, _ = line_sections(lines)
        ended += sections[:3]
    else:
        ended.append(context("No watch has ended yet."))

    tail: list[Block] = []
    if content.withheld:
        tail.append(
            context(
                f"{plural(content.withheld, 'item')} not shown: in channels you are not a"
                " member of."
            )
        )

    watches: list[Block] = [{"type": "divider"}, header(f"Active watches ({len(content.watches)})")]
    fixed = len(top) + len(watches) + len(schedules) + len(archive) + len(ended) + len(tail)
    room = MAX_VIEW_BLOCKS - fixed - 1  # one for "…and N more"
    shown = list(content.watches[: max(0, min(MAX_HOME_WATCHES, room))])
    if not content.watches:
        watches.append(context(f"No exports are watched. `{cmd} &lt;export gid&gt;` watches one."))
    watches += [_watch_block(w, now) for w in shown]
    if len(content.watches) > len(shown):
        watches.append(_more(len(content.watches) - len(shown), "watches", f"`{cmd} list all`"))
    blocks = [*top, *watches, *schedules, *archive, *ended, *tail]
    return View("home", blocks, {"callback_id": HOME_CALLBACK})


def unwatch_notice(
    gid: str | None,
    channel_id: str | None,
    outcome: Literal["stopped", "not_found", "not_allowed"],
) -> str:
    """What the home says after its Unwatch button (safe mrkdwn, shown atop the home)."""
    where = channel_mention(channel_id) or "its channel"
    match outcome:
        case "stopped":
            return f":white_check_mark: Stopped watching export {code(gid)} in {where}."
        case "not_allowed":
            return (
                f":lock: Only the person who asked for the watch of export {code(gid)}, a member"
                f" of {where}, or an admin may stop it."
            )
    return ":grey_question: That watch has already ended (or is not in this workspace)."


def stale_button_notice() -> str:
    """A home button whose value names nothing (an old view, or a forged click)."""
    return ":grey_question: That button is out of date; the list below is current."
