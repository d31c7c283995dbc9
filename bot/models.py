"""Plain typed values shared by every layer; no I/O and no imports of ours but `messages`."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta

#: Asana documents that a download link is valid for about one hour after it was fetched.
LINK_VALIDITY = timedelta(hours=1)


class ExportState(enum.StrEnum):
    """An organization export's state; anything Asana adds later maps to UNKNOWN."""

    PENDING = "pending"
    STARTED = "started"
    FINISHED = "finished"
    ERROR = "error"
    UNKNOWN = "unknown"
    #: Ours, never Asana's: a poll got 404, so the export no longer exists and nobody polls it.
    GONE = "gone"

    @classmethod
    def parse(cls, raw: object) -> ExportState:
        """Map Asana's raw value to a state, tolerating case, whitespace and novelties."""
        if isinstance(raw, str):
            try:
                state = cls(raw.strip().lower())
            except ValueError:
                return cls.UNKNOWN
            return cls.UNKNOWN if state is cls.GONE else state
        return cls.UNKNOWN

    @classmethod
    def stored(cls, value: str) -> ExportState:
        """A state as the store wrote it (GONE included); anything else is UNKNOWN."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN

    @property
    def is_terminal(self) -> bool:
        """Asana's end states: finished and error never change again, so nothing needs watching."""
        return self in (ExportState.FINISHED, ExportState.ERROR)

    @property
    def has_ended(self) -> bool:
        """No poll will change it again: Asana's end states, or the export is gone.

        Its watchers are told once (finished, failed or gone) and their watches end.
        """
        return self.is_terminal or self is ExportState.GONE


@dataclass(frozen=True, slots=True)
class Export:
    """What we know of one organization export after one fetch."""

    gid: str
    state: ExportState
    raw_state: str | None = None
    organization_gid: str | None = None
    organization_name: str | None = None
    created_at: datetime | None = None
    # Never stored, never logged: presigned URL with credentials in it (kept out of repr).
    download_url: str | None = field(default=None, repr=False, compare=False)


class ProblemKind(enum.StrEnum):
    """Why a call to Asana failed, in the terms a user can act on."""

    BAD_REQUEST = "bad_request"  # 400
    UNAUTHORIZED = "unauthorized"  # 401: token missing, wrong or revoked
    PAYMENT_REQUIRED = "payment_required"  # 402: plan does not include exports
    FORBIDDEN = "forbidden"  # 403: token lacks access
    NOT_FOUND = "not_found"  # 404
    RATE_LIMITED = "rate_limited"  # 429
    ASANA_DOWN = "asana_down"  # 5xx
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    MALFORMED = "malformed"  # a body we cannot understand: asking again gets the same body

    @property
    def is_transient(self) -> bool:
        """Transient problems are retried within a call; the others are answers or need a person.

        A malformed answer (no `data`, another export's gid) is not transient: repeating the
        request gets the same answer, so retrying only delays the error. A watch still backs
        off and polls again later (see `decisions.plan_after_failure`).
        """
        return self in (
            ProblemKind.RATE_LIMITED,
            ProblemKind.ASANA_DOWN,
            ProblemKind.TIMEOUT,
            ProblemKind.CONNECTION,
        )

    @property
    def needs_person(self) -> bool:
        """401, 402, 403: only a person can fix the token, the plan or its access.

        Watches pause (and say so once) instead of backing off, and `check` exits with 4.
        """
        return self in (
            ProblemKind.UNAUTHORIZED,
            ProblemKind.PAYMENT_REQUIRED,
            ProblemKind.FORBIDDEN,
        )


class EndReason(enum.StrEnum):
    """Why a watch ended, as stored in `subscriptions.end_reason`.

    A watch that Slack will not let us post to ends with "slack_" and Slack's error code: only
    the codes `bot.slack_out` sorts as channel or token failures end a watch, so they are all
    named here (`EndReason.slack`), and the stored strings are Slack's own words.
    """

    FINISHED = "finished"  # told the link
    EXPORT_FAILED = "export_failed"  # told Asana's export failed
    EXPORT_NOT_FOUND = "export_not_found"  # told the export is gone (404)
    UNWATCHED = "unwatched"  # someone ran `unwatch`
    # The channel is unusable for us (bot.slack_out's channel failures).
    SLACK_CHANNEL_NOT_FOUND = "slack_channel_not_found"
    SLACK_IS_ARCHIVED = "slack_is_archived"
    SLACK_NOT_IN_CHANNEL = "slack_not_in_channel"
    SLACK_RESTRICTED_ACTION = "slack_restricted_action"
    SLACK_RESTRICTED_ACTION_READ_ONLY_CHANNEL = "slack_restricted_action_read_only_channel"
    SLACK_RESTRICTED_ACTION_THREAD_ONLY_CHANNEL = "slack_restricted_action_thread_only_channel"
    SLACK_RESTRICTED_ACTION_NON_THREADABLE_CHANNEL = (
        "slack_restricted_action_non_threadable_channel"
    )
    SLACK_CANNOT_REPLY_TO_MESSAGE = "slack_cannot_reply_to_message"
    SLACK_TEAM_ACCESS_NOT_GRANTED = "slack_team_access_not_granted"
    SLACK_EKM_ACCESS_DENIED = "slack_ekm_access_denied"
    # The bot token is dead (bot.slack_out's token failures): a new watch cannot post its card.
    SLACK_INVALID_AUTH = "slack_invalid_auth"
    SLACK_NOT_AUTHED = "slack_not_authed"
    SLACK_TOKEN_REVOKED = "slack_token_revoked"  # noqa: S105 - a reason, not a secret
    SLACK_TOKEN_EXPIRED = "slack_token_expired"  # noqa: S105 - a reason, not a secret
    SLACK_ACCOUNT_INACTIVE = "slack_account_inactive"
    SLACK_MISSING_SCOPE = "slack_missing_scope"
    SLACK_NOT_ALLOWED_TOKEN_TYPE = "slack_not_allowed_token_type"  # noqa: S105 - a reason

    @classmethod
    def slack(cls, error: str | None) -> EndReason:
        """The reason for a Slack channel or token failure with this error code."""
        return cls(f"slack_{error}")


@dataclass(frozen=True, slots=True)
class Subscription:
    """One channel watching one export."""

    id: int
    export_gid: str
    team_id: str
    channel_id: str
    user_id: str
    created_at: datetime
    card_ts: str | None = None
    notified_at: datetime | None = None
    notified_ts: str | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    #: The schedule occurrence that started the export (None: a person asked to watch it).
    schedule_run_id: int | None = None
