"""What Slack says about who belongs where: the installation's identity and channel members.

Both answers decide whether someone may see a download link or a watch, so every failure here
answers "unknown", and the callers treat unknown as "no".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import OrgIdentity

log = logging.getLogger(__name__)

_SLACK_ERRORS = (SlackApiError, aiohttp.ClientError, TimeoutError)


def identity_from_auth(auth: Mapping[str, Any] | None) -> OrgIdentity | None:
    """auth.test's answer -> our team and Enterprise org (None when it names no team)."""
    if not auth:
        return None
    team_id = auth.get("team_id")
    if not isinstance(team_id, str) or not team_id:
        return None
    enterprise_id = auth.get("enterprise_id")
    return OrgIdentity(
        team_id, enterprise_id if isinstance(enterprise_id, str) and enterprise_id else None
    )


class Installation:
    """The installing organization, remembered from auth.test at start-up, else asked lazily.

    While Slack has not said who we are, `get` returns None and every clicker is foreign.
    """

    def __init__(self) -> None:
        self._identity: OrgIdentity | None = None
        self._lock = asyncio.Lock()

    def remember(self, auth: Mapping[str, Any] | None) -> None:
        """Keep what auth.test said (a failed auth.test leaves it unknown)."""
        identity = identity_from_auth(auth)
        if identity is not None:
            self._identity = identity

    async def get(self, client: AsyncWebClient) -> OrgIdentity | None:
        """Our identity, asking auth.test when it is not known yet; None if Slack will not say."""
        if self._identity is not None:
            return self._identity
        async with self._lock:
            if self._identity is None:
                try:
                    self.remember(dict((await client.auth_test()).data))  # type: ignore[arg-type]
                except _SLACK_ERRORS as exc:
                    log.info("auth.test failed (%s): clickers count as foreign", type(exc).__name__)
        return self._identity


async def is_member(
    client: AsyncWebClient, channel: str, user: str, *, max_pages: int = 5
) -> bool | None:
    """Whether `user` is in `channel` (conversations.members); None when Slack will not say."""
    cursor: str | None = None
    for _ in range(max_pages):
        try:
            response = await client.conversations_members(
                channel=channel, limit=1000, cursor=cursor
            )
        except _SLACK_ERRORS as exc:
            error = (
                exc.response.get("error") if isinstance(exc, SlackApiError) else type(exc).__name__
            )
            log.info("conversations.members for %s failed: %s", channel, error)
            return None
        if user in (response.get("members") or []):
            return True
        cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
        if not cursor:
            return False
    return None  # a channel too big to read through: not known


async def memberships(
    client: AsyncWebClient,
    channels: Iterable[str],
    user: str,
    *,
    deadline: float,
    concurrency: int = 4,
) -> dict[str, bool | None]:
    """`is_member` for each distinct channel, a few at a time, all within `deadline` seconds.

    Channels Slack did not answer for in time map to None (unknown), so the caller's answer is
    never late.
    """
    wanted = list(dict.fromkeys(channels))
    found: dict[str, bool | None] = dict.fromkeys(wanted)
    gate = asyncio.Semaphore(concurrency)

    async def one(channel: str) -> None:
        async with gate:
            found[channel] = await is_member(client, channel, user)

    tasks = [asyncio.ensure_future(one(channel)) for channel in wanted]
    if tasks:
        _, late = await asyncio.wait(tasks, timeout=deadline)
        for task in late:
            task.cancel()
        if late:
            log.info("channel membership: %d channels did not answer in time", len(late))
    return found


#: How long users.info's "not an admin" is trusted. Only a "no" is kept (as LinkGate keeps only a
#: "no"): a cached answer can then only refuse, never grant. A member promoted to admin waits at
#: most this long; a demoted admin loses `new` at once, since every "yes" is asked afresh. A
#: failure is not kept either (it refuses, and the next command asks again). ADMIN_USERS, when
#: set, is read from the settings and never asks Slack.
ADMIN_CACHE_SECONDS = 60.0
_ADMIN_CACHE_MAX = 1_000


class WorkspaceAdmins:
    """Whether a user is an admin or owner of the workspace (users.info); a "no" cached briefly."""

    def __init__(
        self, *, ttl: float = ADMIN_CACHE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._refused: OrderedDict[str, float] = OrderedDict()

    async def is_admin(self, client: AsyncWebClient, user_id: str) -> bool | None:
        """True for an admin or owner, False for anyone else, None when Slack will not say."""
        now = self._clock()
        refused_at = self._refused.get(user_id)
        if refused_at is not None and now - refused_at < self._ttl:
            return False
        try:
            response = await client.users_info(user=user_id)
        except _SLACK_ERRORS as exc:
            error = (
                exc.response.get("error") if isinstance(exc, SlackApiError) else type(exc).__name__
            )
            log.info("users.info for %s failed: %s", user_id[:20], error)
            return None
        user = response.get("user")
        if not isinstance(user, Mapping):
            return None
        admin = bool(
            not user.get("deleted")
            and (user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))
        )
        if admin:
            self._refused.pop(user_id, None)
            return True
        self._refused[user_id] = now
        self._refused.move_to_end(user_id)
        while len(self._refused) > _ADMIN_CACHE_MAX:
            self._refused.popitem(last=False)
        return False
