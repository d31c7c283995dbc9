"""The Asana client: organization exports over a pooled httpx connection, with typed errors.

Retries transient failures within a time budget, honours Retry-After for every request on the
token (not just the one that got the 429), and never lets the token or a download_url reach a
log line, an exception message or a repr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, ClassVar, Self
from urllib.parse import urlencode

import httpx

from bot.models import Export, ExportState, ProblemKind
from bot.retry import (
    RetryPolicy,
    attempt_timeout,
    fits_budget,
    gate_wait,
    next_wait,
    parse_retry_after,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://app.asana.com/api/1.0"
OPT_FIELDS = "state,organization,organization.name,created_at,download_url"
#: Asana allows 50 concurrent GETs per token; more connections would only queue there.
MAX_CONNECTIONS = 50
#: How long the token is held after a 429 that came without a Retry-After header.
DEFAULT_RATE_LIMIT_HOLD = 1.0
_GID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_URL_QUERY = re.compile(r"(https?://[^\s?#]+)[?#]\S*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_MAX_MESSAGE = 300


def _version() -> str:
    try:
        return metadata.version("asana-export-bot")
    except metadata.PackageNotFoundError:
        return "0+unknown"


USER_AGENT = f"asana-export-bot/{_version()} (+python httpx)"


# ------------------------------------------------------------------------------------ errors


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


class AsanaBadRequest(AsanaError):
    kind = ProblemKind.BAD_REQUEST
    summary = "Asana rejected the request as invalid"


class AsanaUnauthorized(AsanaError):
    kind = ProblemKind.UNAUTHORIZED
    summary = "Asana did not accept the token (missing, wrong or revoked)"


class AsanaPaymentRequired(AsanaError):
    kind = ProblemKind.PAYMENT_REQUIRED
    summary = "The Asana plan does not include organization exports"


class AsanaForbidden(AsanaError):
    kind = ProblemKind.FORBIDDEN
    summary = "The Asana token is not allowed to do this"


class AsanaNotFound(AsanaError):
    kind = ProblemKind.NOT_FOUND
    summary = "Asana does not know this export"


class AsanaRateLimited(AsanaError):
    kind = ProblemKind.RATE_LIMITED
    summary = "Asana's rate limit for this token is reached"

    def _describe(self) -> str:
        text = super()._describe()
        if self.retry_after is not None:
            text += f"; retry in {self.retry_after:.1f} s"
        return text


class AsanaServerError(AsanaError):
    kind = ProblemKind.ASANA_DOWN
    summary = "Asana had a server error"


class AsanaTimeout(AsanaError):
    kind = ProblemKind.TIMEOUT
    summary = "Asana did not answer in time"


class AsanaConnectionError(AsanaError):
    kind = ProblemKind.CONNECTION
    summary = "Could not reach Asana"


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


_BY_STATUS: dict[int, type[AsanaError]] = {
    400: AsanaBadRequest,
    401: AsanaUnauthorized,
    402: AsanaPaymentRequired,
    403: AsanaForbidden,
    404: AsanaNotFound,
    429: AsanaRateLimited,
}


# ----------------------------------------------------------------------------- pure parsing


def scrub(text: object, secrets: tuple[str, ...] = ()) -> str | None:
    """A server-supplied string made safe to show: no secrets, no URL queries, short, one line."""
    if not isinstance(text, str):
        return None
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    text = _URL_QUERY.sub(r"\1?<redacted>", text)
    text = _CONTROL.sub(" ", text).strip()
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 1] + "…"
    return text or None


def parse_datetime(value: object) -> datetime | None:
    """An ISO 8601 timestamp ('Z' or an offset; naive means UTC) as aware UTC, else None."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _opt_str(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def parse_export(payload: object, expected_gid: str | None = None) -> Export:
    """Asana's `{"data": {...}}` as an Export, tolerating missing, unknown and extra fields.

    Raises AsanaMissingData when there is no `data` object, AsanaWrongExport when it describes
    another export than `expected_gid`, AsanaMalformedResponse when it has no gid at all and none
    was expected (as after a POST). A `download_url` is kept only for a finished export: Asana's
    own examples carry one on a pending export, and such a link downloads nothing.
    """
    if not isinstance(payload, dict):
        raise AsanaMalformedResponse(
            "Asana sent a response we could not understand: the body is not a JSON object",
            gid=expected_gid,
        )
    data = payload.get("data")
    if not isinstance(data, dict):
        raise AsanaMissingData(gid=expected_gid)
    gid = _opt_str(data.get("gid"))
    if expected_gid is not None and gid is not None and gid != expected_gid:
        shown = scrub(gid) or "?"
        raise AsanaWrongExport(shown if len(shown) <= 40 else shown[:39] + "…", expected_gid)
    gid = gid or expected_gid
    if gid is None:
        raise AsanaMalformedResponse(
            "Asana sent a response we could not understand: the export has no gid"
        )
    raw_state = data.get("state")
    organization = data.get("organization")
    org_gid = org_name = None
    if isinstance(organization, dict):
        org_gid = _opt_str(organization.get("gid"))
        name = organization.get("name")
        org_name = name if isinstance(name, str) and name else None
    state = ExportState.parse(raw_state)
    url = data.get("download_url")
    if state is not ExportState.FINISHED or not (
        isinstance(url, str) and url.startswith(("https://", "http://"))
    ):
        url = None
    return Export(
        gid=gid,
        state=state,
        raw_state=raw_state if isinstance(raw_state, str) else None,
        organization_gid=org_gid,
        organization_name=org_name,
        created_at=parse_datetime(data.get("created_at")),
        download_url=url,
    )


def error_from_response(
    status: int,
    body: bytes,
    headers: httpx.Headers | dict[str, str],
    *,
    now: datetime,
    gid: str | None = None,
    secrets: tuple[str, ...] = (),
) -> AsanaError:
    """The typed error for a non-2xx answer, with Asana's message and phrase when it sent them."""
    message = phrase = None
    try:
        payload = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        payload = None
    if isinstance(payload, dict):
        errors = payload.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            message = scrub(errors[0].get("message"), secrets)
            phrase = scrub(errors[0].get("phrase"), secrets)
    retry_after = None
    if status == 429:
        retry_after = parse_retry_after(headers.get("Retry-After"), now)
    if status in _BY_STATUS:
        cls = _BY_STATUS[status]
    elif status >= 500:
        cls = AsanaServerError
    elif 400 <= status < 500:
        cls = AsanaError  # an unknown 4xx: a request problem, not Asana being down
    else:
        return AsanaMalformedResponse(
            f"Asana sent an unexpected HTTP status {status}", status=status, gid=gid
        )
    return cls(status=status, message=message, phrase=phrase, retry_after=retry_after, gid=gid)


# ------------------------------------------------------------------------------------ client

Sleep = Callable[[float], Awaitable[Any]]


class AsanaClient:
    """Organization exports on one token, over one pooled keep-alive connection set.

    One call lasts at most about max(timeout, max_retry_time) seconds, retries included.
    """

    def __init__(
        self,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float = 10.0,
        max_retry_time: float = 20.0,
        max_attempts: int = 5,
        user_agent: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not token:
            raise ValueError("an Asana token is required")
        self._token = token
        self._timeout = timeout
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self.policy = RetryPolicy(max_attempts=max_attempts, max_retry_time=max_retry_time)
        #: clock() value before which no request on this token goes out (set by any 429).
        self.rate_limited_until: float | None = None
        #: HTTP attempts made (retries included), for metrics and benchmarks.
        self.requests_sent = 0
        self._base_url = base_url.rstrip("/")
        self._urls: dict[str, httpx.URL] = {}
        self._http = httpx.AsyncClient(
            base_url=self._base_url,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "User-Agent": user_agent or USER_AGENT,
            },
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=MAX_CONNECTIONS,
                max_keepalive_connections=20,
                keepalive_expiry=30.0,
            ),
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"<AsanaClient {self._http.base_url} requests_sent={self.requests_sent}>"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _url(self, path: str) -> httpx.URL:
        """The absolute URL with its query, built once per path: httpx re-parses and merges a
        relative URL and its params on every request (measured: a quarter of the client's CPU).
        """
        url = self._urls.get(path)
        if url is None:
            if len(self._urls) > 10_000:
                self._urls.clear()
            query = urlencode({"opt_fields": OPT_FIELDS})
            url = self._urls[path] = httpx.URL(f"{self._base_url}{path}?{query}")
        return url

    def rate_limit_remaining(self) -> float:
        """Seconds until the token may be used again after a 429 (0 when it may now)."""
        return gate_wait(self.rate_limited_until, self._clock())

    # ----------------------------------------------------------------------- operations

    async def get_export(self, gid: str, *, policy: RetryPolicy | None = None) -> Export:
        """The export's state, organization and (once finished) a freshly minted download_url.

        `policy` overrides the client's retries for this call: background polls retry little,
        since the next tick is a retry anyway, while a person waiting gets the full budget.
        """
        _check_gid(gid)
        return await self._call(
            "GET", f"/organization_exports/{gid}", gid=gid, idempotent=True, policy=policy
        )

    async def create_export(self, organization_gid: str) -> Export:
        """Ask Asana to start exporting an organization; returns the new (pending) export.

        Not idempotent, so only retried when Asana certainly did not act on it: a 429 with
        Retry-After, or a connection that failed before the request was sent.
        """
        _check_gid(organization_gid)
        body = {"data": {"organization": organization_gid}}
        return await self._call("POST", "/organization_exports", body=body, idempotent=False)

    # -------------------------------------------------------------------------- machinery

    async def _call(
        self,
        method: str,
        path: str,
        *,
        gid: str | None = None,
        body: dict[str, Any] | None = None,
        idempotent: bool,
        policy: RetryPolicy | None = None,
    ) -> Export:
        policy = policy or self.policy
        start = self._clock()
        attempts = 0
        while True:
            await self._pass_gate(method, path, gid, start, policy)
            elapsed = self._clock() - start
            timeout = attempt_timeout(
                policy, timeout=self._timeout, elapsed=elapsed, first=attempts == 0
            )
            attempts += 1
            try:
                return await self._attempt(method, path, gid, body, timeout)
            except AsanaError as exc:
                exc.attempts = attempts
                if not _retryable(exc, idempotent):
                    raise
                elapsed = self._clock() - start
                wait = next_wait(
                    policy,
                    attempts_made=attempts,
                    elapsed=elapsed,
                    retry_after=exc.retry_after,
                    rng=self._rng,
                )
                if wait is None:
                    log.warning(
                        "Asana %s %s failed (%s, HTTP %s%s) after %d attempt(s) in %.2fs;"
                        " giving up",
                        method,
                        path,
                        exc.kind,
                        exc.status,
                        _phrase_note(exc),
                        attempts,
                        elapsed,
                    )
                    raise
                log.info(
                    "Asana %s %s failed (%s, HTTP %s%s); retry %d/%d in %.2fs",
                    method,
                    path,
                    exc.kind,
                    exc.status,
                    _phrase_note(exc),
                    attempts,
                    policy.max_attempts - 1,
                    wait,
                )
                await self._sleep(wait)

    async def _pass_gate(
        self, method: str, path: str, gid: str | None, start: float, policy: RetryPolicy
    ) -> None:
        """Wait out a token-wide rate limit, or raise AsanaRateLimited if it outlasts the budget."""
        wait = self.rate_limit_remaining()
        if wait <= 0:
            return
        elapsed = self._clock() - start
        if not fits_budget(policy, elapsed=elapsed, wait=wait):
            raise AsanaRateLimited(retry_after=wait, gid=gid, request_sent=False)
        log.info("Asana %s %s waits %.2fs for the token's rate limit", method, path, wait)
        await self._sleep(wait)

    async def _attempt(
        self,
        method: str,
        path: str,
        gid: str | None,
        body: dict[str, Any] | None,
        limit: float,
    ) -> Export:
        """One HTTP exchange, turned into an Export or a typed error (never an httpx one)."""
        self.requests_sent += 1
        started = self._clock()
        try:
            response = await self._http.request(method, self._url(path), json=body, timeout=limit)
        except httpx.TimeoutException as exc:
            sent = not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
            log.debug("Asana %s %s timed out after %.2fs", method, path, limit)
            raise AsanaTimeout(
                f"Asana did not answer within {limit:.1f} s",
                gid=gid,
                request_sent=sent,
            ) from None
        except httpx.DecodingError:
            raise AsanaMalformedResponse(
                "Asana sent a response we could not understand: the body could not be decoded",
                gid=gid,
            ) from None
        except httpx.HTTPError as exc:
            sent = not isinstance(exc, httpx.ConnectError)
            name = type(exc).__name__
            log.debug("Asana %s %s connection failed (%s)", method, path, name)
            raise AsanaConnectionError(
                f"Could not reach Asana ({name})", gid=gid, request_sent=sent
            ) from None
        status = response.status_code
        log.debug("Asana %s %s -> %d in %.3fs", method, path, status, self._clock() - started)
        if 200 <= status < 300:
            try:
                payload = json.loads(response.content)
            except (ValueError, UnicodeDecodeError):
                raise AsanaMalformedResponse(
                    "Asana sent a response we could not understand: the body is not JSON",
                    status=status,
                    gid=gid,
                ) from None
            return parse_export(payload, expected_gid=gid)
        error = error_from_response(
            status,
            response.content,
            response.headers,
            now=datetime.now(UTC),
            gid=gid,
            secrets=(self._token,),
        )
        if isinstance(error, AsanaRateLimited):
            # Asana always sends Retry-After; should a proxy strip it, still hold the token.
            hold = DEFAULT_RATE_LIMIT_HOLD if error.retry_after is None else error.retry_after
            until = self._clock() + hold
            if self.rate_limited_until is None or until > self.rate_limited_until:
                self.rate_limited_until = until
        raise error


def _phrase_note(exc: AsanaError) -> str:
    """Asana's error phrase for the log: its support asks for it to find a 500 in their logs."""
    return f", phrase {exc.phrase!r}" if exc.phrase else ""


def _check_gid(gid: str) -> None:
    """Refuse anything that is not a plain gid before it can reshape the URL path."""
    if not isinstance(gid, str) or not _GID.match(gid):
        raise AsanaBadRequest("That is not a valid Asana gid", request_sent=False)


def _retryable(exc: AsanaError, idempotent: bool) -> bool:
    """GETs retry every transient problem; a POST only what certainly did not act."""
    if idempotent:
        return exc.kind.is_transient
    if isinstance(exc, AsanaRateLimited):
        return exc.retry_after is not None
    return not exc.request_sent and exc.kind in (ProblemKind.CONNECTION, ProblemKind.TIMEOUT)
