"""One exception tree for every way a call to Asana can fail, grouped by what a caller can do.

`AsanaError` is the root. `AsanaTransientError` (rate limited, server error, timeout, connection)
is worth trying again later; `AsanaNeedsPerson` (401, 402, 403) waits for a person to fix the
token, the plan or the access. The rest (bad request, not found, malformed answers) are answers:
asking again gets the same one. Each class keeps its `kind`, the stored and user-facing name.
"""

from __future__ import annotations

from typing import ClassVar

from bot.models import ProblemKind


class AsanaError(Exception):
    """A call to Asana failed; `kind` says what a user (or the scheduler) can do about it.

    `message` and `phrase` are Asana's own (`errors[0]`), scrubbed and shortened. `request_sent`
    is False only when the request certainly never reached Asana (safe to repeat a POST).
    """

    kind: ClassVar[ProblemKind] = ProblemKind.BAD_REQUEST
    summary: ClassVar[str] = "Asana refused the request"

    def __init__(
        self,
        text: str | None = None,
        *,
        status: int | None = None,
        message: str | None = None,
        phrase: str | None = None,
        retry_after: float | None = None,
        gid: str | None = None,
        request_sent: bool = True,
    ) -> None:
        self.status = status
        self.message = message
        self.phrase = phrase
        self.retry_after = retry_after
        self.gid = gid
        self.request_sent = request_sent
        self.attempts = 0
        super().__init__(text or self._describe())

    def _describe(self) -> str:
        text = self.summary
        if self.status is not None:
            text += f" (HTTP {self.status})"
        if self.message:
            text += f": {self.message}"
        if self.phrase:
            text += f" [phrase: {self.phrase}]"
        return text


class AsanaTransientError(AsanaError):
    """Asana could answer later: retried within a call, then the next poll tries again."""


class AsanaNeedsPerson(AsanaError):
    """The token, the plan or its access must change (401, 402, 403): watches pause."""


# ------------------------------------------------------------------------ needs a person


class AsanaUnauthorized(AsanaNeedsPerson):
    kind = ProblemKind.UNAUTHORIZED
    summary = "Asana did not accept the token (missing, wrong or revoked)"


class AsanaPaymentRequired(AsanaNeedsPerson):
    kind = ProblemKind.PAYMENT_REQUIRED
    summary = "The Asana plan does not include organization exports"


class AsanaForbidden(AsanaNeedsPerson):
    kind = ProblemKind.FORBIDDEN
    summary = "The Asana token is not allowed to do this"


# ----------------------------------------------------------------------------- transient


class AsanaRateLimited(AsanaTransientError):
    kind = ProblemKind.RATE_LIMITED
    summary = "Asana's rate limit for this token is reached"

    def _describe(self) -> str:
        text = super()._describe()
        if self.retry_after is not None:
            text += f"; retry in {self.retry_after:.1f} s"
        return text


class AsanaServerError(AsanaTransientError):
    kind = ProblemKind.ASANA_DOWN
    summary = "Asana had a server error"


class AsanaTimeout(AsanaTransientError):
    kind = ProblemKind.TIMEOUT
    summary = "Asana did not answer in time"


class AsanaConnectionError(AsanaTransientError):
    kind = ProblemKind.CONNECTION
    summary = "Could not reach Asana"


# ------------------------------------------------------------------------------- answers


class AsanaBadRequest(AsanaError):
    kind = ProblemKind.BAD_REQUEST
    summary = "Asana rejected the request as invalid"


class AsanaNotFound(AsanaError):
    kind = ProblemKind.NOT_FOUND
    summary = "Asana does not know this export"


class AsanaMalformedResponse(AsanaError):
    """An answer that is not what the API promises: asking again would get the same answer."""

    kind = ProblemKind.MALFORMED
    summary = "Asana sent a response we could not understand"


class AsanaMissingData(AsanaMalformedResponse):
    summary = "Asana's answer had no `data`"
    reason = "no_data"


class AsanaWrongExport(AsanaMalformedResponse):
    summary = "Asana answered about a different export"
    reason = "wrong_gid"

    def __init__(self, got: str, expected: str) -> None:
        self.answered_gid = got
        super().__init__(f"Asana answered about export {got}, not {expected}", gid=expected)


#: The error class for each status Asana documents; other 4xx are a plain AsanaError.
BY_STATUS: dict[int, type[AsanaError]] = {
    400: AsanaBadRequest,
    401: AsanaUnauthorized,
    402: AsanaPaymentRequired,
    403: AsanaForbidden,
    404: AsanaNotFound,
    429: AsanaRateLimited,
}
