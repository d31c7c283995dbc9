"""What the bot says about one export: the lookup answer, the status card and the posts."""

from __future__ import annotations

from datetime import datetime

from bot.messages.blocks import Block, Message, actions, context, message, notice, section
from bot.messages.mrkdwn import GID_BUDGET, code, command_text, esc, user_mention
from bot.messages.origin import CardOrigin, origin_block, origin_text
from bot.messages.parts import (
    DEFAULT_COMMAND,
    FAILED_ADVICE,
    LINK_NOTE,
    STATE_EMOJI,
    card_head,
    download,
    fresh_link_button,
    fresh_link_only,
    requested,
    short,
    state_sentence,
)
from bot.messages.timefmt import format_absolute, format_relative, plural
from bot.models import LINK_VALIDITY, Export, ExportState


def render_export(
    export: Export,
    *,
    now: datetime,
    link_valid_until: datetime | None = None,
    command: str = DEFAULT_COMMAND,
    include_link: bool = True,
) -> Message:
    """The in-channel answer to a lookup: state, organization, requested time, and the link.

    A finished export's link goes in a URL button and a section link; not in `text` (see
    `parts`). With `include_link=False` (the channel may not see links) a "Get a fresh link"
    button shows it privately to whoever presses it.
    """
    valid_until = link_valid_until if link_valid_until is not None else now + LINK_VALIDITY
    blocks = card_head(export, now)
    retry = f"`{command_text(command)} {esc(export.gid, GID_BUDGET)}`"
    text = state_sentence(export)
    match export.state:
        case ExportState.FINISHED if not include_link:
            blocks += fresh_link_only(export.gid)
        case ExportState.FINISHED:
            found = download(export, now, valid_until)
            if found is not None:
                link_section, url_button = found
                blocks += [
                    link_section,
                    actions(url_button),
                    context(LINK_NOTE + f" Run {retry} again for a new one."),
                ]
                text = f":white_check_mark: Asana {short(export)} is finished: download link below."
            else:
                blocks.append(
                    section(
                        "The export is finished, but Asana has not given a usable download link"
                        f" yet. Ask again in a minute: {retry}"
                    )
                )
                text = f":white_check_mark: Asana {short(export)} is finished; no link yet."
        case ExportState.ERROR:
            blocks.append(section(FAILED_ADVICE))
            text = f":x: Asana {short(export)} failed on Asana's side."
        case ExportState.PENDING | ExportState.STARTED:
            blocks.append(
                context("Asana is still preparing this export; that takes minutes to hours.")
            )
        case _:
            blocks.append(
                context(f"Asana reported a state this bot does not know. Ask again later: {retry}")
            )
    return message(text, blocks, "in_channel")


def render_looking_up(gid: str) -> Message:
    """The immediate ack when Asana is slower than Slack's 3-second deadline."""
    return notice(f":hourglass_flowing_sand: Looking up export {code(gid)}…")


def render_status_card(
    export: Export,
    *,
    now: datetime,
    watchers: int | None = None,
    next_check_at: datetime | None = None,
    origin: CardOrigin | None = None,
) -> Message:
    """The card edited in place as the export moves; it never carries the download link.

    (The card lives for hours; the link dies after one. The link goes in a separate post.)
    An export a schedule started says so on every version of its card (`origin`).
    """
    blocks = [*card_head(export, now), origin_block(origin)]
    notes = [f"Last checked {format_absolute(now)}"]
    if not export.state.is_terminal and next_check_at is not None:
        notes.append(f"next check {format_relative(next_check_at, now)}")
    if watchers is not None and watchers > 0:
        notes.append(f"watched in {plural(watchers, 'channel')}")
    text = state_sentence(export)
    match export.state:
        case ExportState.FINISHED:
            blocks.append(
                section(
                    ":white_check_mark: Finished. The download link was posted in this channel;"
                    " press *Get a fresh link* there if it has expired."
                )
            )
        case ExportState.ERROR:
            blocks.append(section(FAILED_ADVICE))
            text = f":x: Asana {short(export)} failed."
    blocks.append(context(" · ".join(notes)))
    return message(text + origin_text(origin), blocks)


def render_finished_post(
    export: Export,
    *,
    now: datetime,
    requester_user_id: str | None,
    link_valid_until: datetime,
    include_link: bool = True,
) -> Message:
    """The one post that says an export is ready: mentions the requester, carries the link.

    With `include_link=False` (or no usable URL) the link is not posted in the channel; the
    "Get a fresh link" button shows one privately to whoever presses it.
    """
    mention = user_mention(requester_user_id)
    lead = f"{mention} " if mention else ""
    ready = f"{lead}:white_check_mark: Asana {short(export)} is ready."
    blocks: list[Block | None] = [section(ready)]
    found = download(export, now, link_valid_until) if include_link else None
    if found is not None:
        link_section, url_button = found
        blocks += [
            link_section,
            actions(url_button, fresh_link_button(export.gid)),
            context(LINK_NOTE),
        ]
    else:
        blocks += fresh_link_only(export.gid)
    return message(ready, blocks)


def render_fresh_link(export: Export, *, now: datetime, link_valid_until: datetime) -> Message:
    """Ephemeral answer to "Get a fresh link": a link just fetched, for the presser only."""
    if export.state is not ExportState.FINISHED:
        return notice(
            f"{STATE_EMOJI[export.state]} Asana {short(export)} is not finished,"
            " so there is no download link."
        )
    found = download(export, now, link_valid_until)
    if found is None:
        return notice(
            f":warning: Asana gave no usable download link for {short(export)}."
            " Try again in a minute."
        )
    link_section, url_button = found
    text = f":inbox_tray: Fresh download link for {short(export)} below."
    return message(text, [section(text), link_section, actions(url_button)], "ephemeral")


def render_export_failed(export: Export, *, now: datetime) -> Message:
    """Posted once when a watched export ends in `error`."""
    text = f":x: Asana {short(export)} failed on Asana's side."
    blocks = [
        section(f"{text} Request a new export for this organization."),
        context(f"Requested {requested(export, now)}"),
    ]
    return message(text, blocks)


def render_export_gone(gid: str) -> Message:
    """Posted once when Asana stops knowing a watched export (404): the watch ends."""
    return notice(
        f":grey_question: Asana no longer shows export {code(gid)} to this bot (404)."
        " Stopped watching it.",
        None,
    )
