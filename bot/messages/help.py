"""What the bot says to explain itself: usage after a bad command, and help."""

from __future__ import annotations

from bot.messages.blocks import Block, Message, context, header, message, section
from bot.messages.mrkdwn import PROBLEM_BUDGET, command_text, esc
from bot.messages.parts import DEFAULT_COMMAND, LINK_NOTE


def _command_lines(command: str) -> list[str]:
    cmd = command_text(command)
    return [
        f"• `{cmd} &lt;gid&gt;`: look up an export: state, organization and download link",
        f"• `{cmd} watch &lt;gid&gt;`: watch an export and post its link here when it is ready",
        f"• `{cmd} unwatch &lt;gid&gt;`: stop watching an export in this channel",
        f"• `{cmd} list`: exports watched in this channel",
        f"• `{cmd} list all`: exports watched anywhere in this workspace",
        f"• `{cmd} new [&lt;organization gid&gt;]`: start an export of the organization and"
        " watch it here (admins only)",
        f"• `{cmd} schedule &lt;when&gt; [tz &lt;zone&gt;] [&lt;organization gid&gt;]`: start one"
        " every day, week or month (`daily 03:30`, `weekly mon 02:00`, `monthly 1 02:00`,"
        ' `cron "0 2 * * 1"`; admins only)',
        f"• `{cmd} schedules` / `schedules all`: the recurring exports here, or anywhere",
        f"• `{cmd} unschedule &lt;number&gt;`: stop one (its creator or an admin)",
        f"• `{cmd} help`: more help",
    ]


def render_usage(problem: str | None = None, *, command: str = DEFAULT_COMMAND) -> Message:
    """Ephemeral usage, led by what was wrong with the input (which may quote the input)."""
    blocks: list[Block | None] = []
    text = f"Usage: `{command_text(command)} &lt;gid&gt;`"
    if problem and problem.strip():
        shown = esc(problem.strip(), PROBLEM_BUDGET)
        blocks.append(section(f":warning: {shown}"))
        text = f":warning: {shown} {text}"
    blocks.append(section("*Usage*\n" + "\n".join(_command_lines(command))))
    return message(text, blocks, "ephemeral")


def render_help(command: str = DEFAULT_COMMAND) -> Message:
    """Ephemeral help: what the bot does, its commands, and what it needs from Asana."""
    cmd = command_text(command)
    blocks: list[Block | None] = [
        header("Asana export bot"),
        section(
            "Looks up Asana organization exports and tells this channel when one is ready,"
            " with a fresh download link."
        ),
        section("*Commands*\n" + "\n".join(_command_lines(command))),
        section(
            "*Good to know*\n"
            "• The gid is the number Asana returned when the export was requested"
            " (`POST /organization_exports`).\n"
            "• " + LINK_NOTE + " Press *Get a fresh link* or look the export up again for a"
            " new one.\n"
            "• Exports take minutes to hours. The bot checks a watched export every few minutes"
            " and posts once when it is finished.\n"
            "• The bot's Asana token must be a Service Account token of an Enterprise or"
            " Enterprise+ organization."
        ),
        context(f"Example: `{cmd} 1234567890123456`"),
    ]
    return message(
        f"Asana export bot: `{cmd} &lt;gid&gt;` looks up an export.", blocks, "ephemeral"
    )
