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

    @classmethod
    def parse(cls, raw: object) -> ExportState:
        """Map Asana's raw value to a state, tolerating case, whitespace and novelties."""
        if isinstance(raw, str):
            try:
                return cls(raw.strip().lower())
            except ValueError:
                return cls.UNKNOWN
        return cls.UNKNOWN

    @property
    def is_terminal(self) -> bool:
        """Finished and error never change again, so nothing needs watching."""
        return self in (ExportState.FINISHED, ExportState.ERROR)


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
