"""The Asana client: organization exports over a pooled httpx connection, with typed errors.

Retries transient failures within a time budget, waits at the token's one 429 gate (shared with
the polling budget) before every request, and never lets the token or a download_url reach a
log line, an exception message or a repr.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Self, TypeVar
from urllib.parse import urlencode
from urllib.request import getproxies

import httpx

from bot import __version__
from bot.asana.errors import (
    AsanaBadRequest,
    AsanaConnectionError,
    AsanaError,
    AsanaMalformedResponse,
    AsanaRateLimited,
    AsanaTimeout,
    AsanaTransientError,
)
from bot.asana.parsing import AsanaUser, error_from_response, parse_export, parse_json, parse_user
from bot.asana.transport import StreamTransport
from bot.backoff import Clock, RetryPolicy, attempt_timeout, fits_budget, next_wait
from bot.models import Export, ProblemKind
from bot.ratelimit import RateLimitGate

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://app.asana.com/api/1.0"
OPT_FIELDS = "state,organization,organization.name,created_at,download_url"
#: What `get_me` asks of the token's user.
USER_FIELDS = "name,email"
#: Asana allows 50 concurrent GETs per token; more connections would only queue there.
MAX_CONNECTIONS = 50
#: How long the token is held after a 429 that came without a Retry-After header.
DEFAULT_RATE_LIMIT_HOLD = 1.0
USER_AGENT = f"asana-export-bot/{__version__} (+python httpx)"
_GID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

Sleep = Callable[[float], Awaitable[Any]]
#: Told each HTTP exchange's outcome ("ok" or the problem kind) and its seconds (metrics).
Observe = Callable[[str, float], None]
T = TypeVar("T")


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
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        gate: RateLimitGate | None = None,
        observe: Observe | None = None,
    ) -> None:
        if not token:
            raise ValueError("an Asana token is required")
        self._token = token
        self._timeout = timeout
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._observe = observe
        self.policy = RetryPolicy(max_attempts=max_attempts, max_retry_time=max_retry_time)
        #: Closed by any 429 on this token; pass the polling budget's gate to share it.
        self.gate = gate if gate is not None else RateLimitGate(clock=clock)
        self._base_url = base_url.rstrip("/")
        self._urls: dict[str, httpx.URL] = {}
        # Every connection may stay idle (for 30 s): with 20, a burst of 50 lookups closed 30
        # connections only to open them again (against Asana, a TLS handshake each).
        limits = httpx.Limits(
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=MAX_CONNECTIONS,
            keepalive_expiry=30.0,
        )
        #: None when httpx's own transport (with the environment's proxy) is used.
        self._transport = transport or _default_transport(limits)
        self._http = httpx.AsyncClient(
            base_url=self._base_url,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "User-Agent": user_agent or USER_AGENT,
            },
            timeout=httpx.Timeout(timeout),
            limits=limits,
            transport=self._transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"<AsanaClient {self._http.base_url}>"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _url(self, path: str, fields: str = OPT_FIELDS) -> httpx.URL:
        """The absolute URL with its query, built once per path: httpx re-parses and merges a
        relative URL and its params on every request (measured: a quarter of the client's CPU).
        """
        url = self._urls.get(path)
        if url is None:
            if len(self._urls) > 10_000:
                self._urls.clear()
            query = urlencode({"opt_fields": fields})
            url = self._urls[path] = httpx.URL(f"{self._base_url}{path}?{query}")
        return url

    # ----------------------------------------------------------------------- operations

    async def get_export(self, gid: str, *, policy: RetryPolicy | None = None) -> Export:
        """The export's state, organization and (once finished) a freshly minted download_url.

        `policy` overrides the client's retries for this call: background polls retry little,
        since the next tick is a retry anyway, while a person waiting gets the full budget.
        """
        _check_gid(gid)
        return await self._call(
            "GET",
            f"/organization_exports/{gid}",
            gid=gid,
            idempotent=True,
            policy=policy,
            parse=lambda payload: parse_export(payload, gid),
        )

    async def create_export(self, organization_gid: str) -> Export:
        """Ask Asana to start exporting an organization; returns the new (pending) export.

        Not idempotent, so only retried when Asana certainly did not act on it: a 429 with
        Retry-After, or a connection that failed before the request was sent.
        """
        _check_gid(organization_gid)
        body = {"data": {"organization": organization_gid}}
        return await self._call(
            "POST", "/organization_exports", body=body, idempotent=False, parse=parse_export
        )

    async def get_me(self) -> AsanaUser:
        """Who the token belongs to (GET /users/me): a token check that needs no export gid."""
        return await self._call(
            "GET", "/users/me", idempotent=True, parse=parse_user, fields=USER_FIELDS
        )

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
        parse: Callable[[object], T],
        fields: str = OPT_FIELDS,
    ) -> T:
        """One operation with retries; a 2xx body becomes `parse(json)`."""
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
                return await self._attempt(method, path, gid, body, timeout, parse, fields)
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
                # A 429 means we are over the token's quota: an operator should see it.
                log.log(
                    logging.WARNING if exc.kind is ProblemKind.RATE_LIMITED else logging.INFO,
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
        wait = self.gate.remaining()
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
        read: Callable[[object], T],
        fields: str,
    ) -> T:
        """One HTTP exchange, turned into `read`'s value or a typed error (never an httpx one)."""
        started = self._clock()
        try:
            result = await self._exchange(method, path, gid, body, limit, read, fields, started)
        except AsanaError as exc:
            self._note(str(exc.kind), started)
            raise
        self._note("ok", started)
        return result

    def _note(self, outcome: str, started: float) -> None:
        if self._observe is not None:
            self._observe(outcome, self._clock() - started)

    async def _send(
        self, method: str, url: httpx.URL, body: dict[str, Any] | None, limit: float
    ) -> httpx.Response:
        """One request, read in full: what `AsyncClient.request` does for this client, without
        the layers it does not use (auth flows, redirects, event hooks, mounts), which were a
        third of a lookup's client CPU. The request is the client's own (`build_request`:
        headers, cookies, timeouts); a response's cookies are kept as the client keeps them.
        With httpx's own transport (a proxy from the environment) the client sends it."""
        if self._transport is None:
            return await self._http.request(method, url, json=body, timeout=limit)
        if self._http.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        request = self._http.build_request(method, url, json=body, timeout=limit)
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        except BaseException:
            await response.aclose()
            raise
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:  # else nothing to keep
            self._http.cookies.extract_cookies(response)
        return response

    async def _exchange(
        self,
        method: str,
        path: str,
        gid: str | None,
        body: dict[str, Any] | None,
        limit: float,
        read: Callable[[object], T],
        fields: str,
        started: float,
    ) -> T:
        try:
            response = await self._send(method, self._url(path, fields), body, limit)
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
            return read(parse_json(response.content, status=status, gid=gid))
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
            self.gate.hold(hold)
        raise error


def _default_transport(limits: httpx.Limits) -> httpx.AsyncBaseTransport | None:
    """Our stream transport (half httpcore's CPU per call), or None for httpx's own pool when
    the environment names a proxy (HTTPS_PROXY & co), which only httpx's transports speak."""
    proxies = getproxies()
    if any(proxies.get(scheme) for scheme in ("https", "http", "all")):
        return None
    return StreamTransport(limits=limits)


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
        return isinstance(exc, AsanaTransientError)
    if isinstance(exc, AsanaRateLimited):
        return exc.retry_after is not None
    return not exc.request_sent and exc.kind in (ProblemKind.CONNECTION, ProblemKind.TIMEOUT)
