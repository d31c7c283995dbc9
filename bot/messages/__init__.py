"""Every Slack message the bot sends, as pure functions from values to Block Kit + fallback text.

Safety rules, applied everywhere (so handlers never have to think about them):

* Every string that came from Asana or a user is escaped for mrkdwn (`&`, `<`, `>`) wherever it is
  placed in mrkdwn or in the fallback `text` (Slack renders that as mrkdwn too), so an organization
  named `<!channel>` pings nobody. Such strings are also flattened to one line and shortened, so
  they cannot add block quotes or blow the size limits (`mrkdwn`).
* The only `<...>` constructs in our output are the ones built in `mrkdwn`: user mentions
  `<@U...>` and channel links `<#C...>` from ids that match Slack's id shape, and
  `<https://...|label>` links whose URL went through `sanitize_url`.
* Limits are enforced at the block builders (`blocks`), and clipping never cuts an entity or a
  `<...>` construct in half.
* The download URL goes in a URL button and one section link, never in a fallback `text`
  (`parts.download`).

The modules, each with one job: `mrkdwn` (escaping, links, mentions, clipping), `timefmt` (times
as people read them), `blocks` (the `Message` type and Block Kit builders), `parts` (how an export
is named and linked), and the renderers: `exports` (lookup answer, status card, posts), `watches`
(watching and the list), `creating` (starting an export), `schedules` (recurring exports), `archives` (archiving), `problems` (errors and refusals), `help` (usage and help). This package
imports nothing of ours but `bot.models`. Callers import from `bot.messages`, never a module.
"""

from bot.messages.archives import (
    format_size,
    progress_text,
    render_archive_failed,
    render_archived,
    render_card_archived,
    render_card_archiving,
)
from bot.messages.blocks import (
    MAX_BLOCKS,
    MAX_BUTTON_TEXT,
    MAX_BUTTON_URL,
    MAX_BUTTON_VALUE,
    MAX_CONTEXT_TEXT,
    MAX_FALLBACK_TEXT,
    MAX_FIELD_TEXT,
    MAX_FIELDS,
    MAX_HEADER_TEXT,
    MAX_SECTION_TEXT,
    Message,
)
from bot.messages.creating import (
    WATCH_INSTEAD_ACTION,
    render_already_handled,
    render_create_refused,
    render_create_timeout,
    render_create_unknown,
    render_created,
    render_creating,
    render_no_organization,
    render_not_admin,
    render_running_offer,
)
from bot.messages.exports import (
    render_export,
    render_export_failed,
    render_export_gone,
    render_finished_post,
    render_fresh_link,
    render_looking_up,
    render_status_card,
)
from bot.messages.help import render_help, render_usage
from bot.messages.mrkdwn import (
    channel_mention,
    escape_mrkdwn,
    safe_link,
    sanitize_url,
    truncate,
    user_mention,
)
from bot.messages.parts import DEFAULT_COMMAND, DOWNLOAD_ACTION, FRESH_LINK_ACTION
from bot.messages.problems import (
    FairUseRefusal,
    render_database_unavailable,
    render_fair_use_refusal,
    render_internal_error,
    render_link_withheld,
    render_lookup_timeout,
    render_problem,
    render_refused,
    render_slow_down,
    render_watch_cap,
    render_work_timeout,
    render_working,
)
from bot.messages.schedule_posts import (
    render_schedule_failed,
    render_schedule_paused,
    render_schedule_started,
    render_schedule_unknown,
)
from bot.messages.schedules import (
    ScheduleLine,
    render_schedule_list,
    render_schedule_usage,
    render_scheduled,
    render_unscheduled,
)
from bot.messages.timefmt import (
    format_absolute,
    format_duration,
    format_relative,
    format_timestamp,
)
from bot.messages.watches import (
    MAX_LIST_ROWS,
    WatchRow,
    render_already_watching,
    render_cannot_post,
    render_card_unwatched,
    render_unwatched,
    render_watch_list,
    render_watch_paused,
    render_watch_started,
)

__all__ = [
    "DEFAULT_COMMAND",
    "DOWNLOAD_ACTION",
    "FRESH_LINK_ACTION",
    "MAX_BLOCKS",
    "MAX_BUTTON_TEXT",
    "MAX_BUTTON_URL",
    "MAX_BUTTON_VALUE",
    "MAX_CONTEXT_TEXT",
    "MAX_FALLBACK_TEXT",
    "MAX_FIELDS",
    "MAX_FIELD_TEXT",
    "MAX_HEADER_TEXT",
    "MAX_LIST_ROWS",
    "MAX_SECTION_TEXT",
    "WATCH_INSTEAD_ACTION",
    "FairUseRefusal",
    "Message",
    "ScheduleLine",
    "WatchRow",
    "channel_mention",
    "escape_mrkdwn",
    "format_absolute",
    "format_duration",
    "format_relative",
    "format_size",
    "format_timestamp",
    "progress_text",
    "render_already_handled",
    "render_already_watching",
    "render_archive_failed",
    "render_archived",
    "render_cannot_post",
    "render_card_archived",
    "render_card_archiving",
    "render_card_unwatched",
    "render_create_refused",
    "render_create_timeout",
    "render_create_unknown",
    "render_created",
    "render_creating",
    "render_database_unavailable",
    "render_export",
    "render_export_failed",
    "render_export_gone",
    "render_fair_use_refusal",
    "render_finished_post",
    "render_fresh_link",
    "render_help",
    "render_internal_error",
    "render_link_withheld",
    "render_looking_up",
    "render_lookup_timeout",
    "render_no_organization",
    "render_not_admin",
    "render_problem",
    "render_refused",
    "render_running_offer",
    "render_schedule_failed",
    "render_schedule_list",
    "render_schedule_paused",
    "render_schedule_started",
    "render_schedule_unknown",
    "render_schedule_usage",
    "render_scheduled",
    "render_slow_down",
    "render_status_card",
    "render_unscheduled",
    "render_unwatched",
    "render_usage",
    "render_watch_cap",
    "render_watch_list",
    "render_watch_paused",
    "render_watch_started",
    "render_work_timeout",
    "render_working",
    "safe_link",
    "sanitize_url",
    "truncate",
    "user_mention",
]
