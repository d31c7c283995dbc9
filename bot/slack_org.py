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

from bot.access import OrgIdentity, is_admin_here

log = logging.getLogger(__name__)

_SLACK_ERRORS = (SlackApiError, aiohttp.ClientError, TimeoutError)


def identity_from_auth(auth: Mapping[str, Any] | None) -> OrgIdentity | None:
    """auth.test's answer -> our team and Enterprise org (None when it names neither).

    An org-wide install on Enterprise Grid (`is_enterprise_install`) is the org's: auth.test
    may name no workspace, and the org stands in for it.
    """
    if not auth:
        return None
    enterprise_id = auth.get("enterprise_id")
    enterprise_id = enterprise_id if isinstance(enterprise_id, str) and enterprise_id else None
    org_wide = auth.get("is_enterprise_install") is True and enterprise_id is not None
    team_id = auth.get("team_id")
    if not isinstance(team_id, str) or not team_id:
        team_id = enterprise_id if org_wide else None
    if team_id is None:
        return None
    return OrgIdentity(team_id, enterprise_id, org_wide=org_wide)


#: How long the list of an org-wide install's workspaces (auth.teams.list) is trusted. A
#: workspace granted the app since is "not ours" for at most this long: the safe direction.
WORKSPACES_CACHE_SECONDS = 300.0
_WORKSPACES_MAX_PAGES = 20


class Installation:
    """The installing organization, remembered from auth.test at start-up, else asked lazily.

    While Slack has not said who we are, `get` returns None and every clicker is foreign.
    """

    def __init__(
        self,
        *,
        workspaces_ttl: float = WORKSPACES_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._identity: OrgIdentity | None = None
        self._lock = asyncio.Lock()
        self._workspaces: frozenset[str] = frozenset()
        self._workspaces_at: float | None = None
        self._workspaces_ttl = workspaces_ttl
        self._clock = clock

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

    async def workspaces(self, client: AsyncWebClient) -> frozenset[str]:
        """The workspaces of our Enterprise org that an org-wide install was granted.

        Empty unless we are installed org-wide. Asked from auth.teams.list and kept for
        WORKSPACES_CACHE_SECONDS; a failure keeps the last answer (or none: foreign).
        """
        identity = await self.get(client)
        if identity is None or not identity.org_wide:
            return frozenset()
        now = self._clock()
        if self._workspaces_at is not None and now - self._workspaces_at < self._workspaces_ttl:
            return self._workspaces
        async with self._lock:
            if self._workspaces_at is None or self._clock() - self._workspaces_at >= (
                self._workspaces_ttl
            ):
                found = await _granted_workspaces(client)
                if found is not None:
                    self._workspaces, self._workspaces_at = found, self._clock()
        return self._workspaces


async def _granted_workspaces(client: AsyncWebClient) -> frozenset[str] | None:
    """Every workspace auth.teams.list names (all pages); None when Slack will not say."""
    teams: set[str] = set()
    cursor: str | None = None
    for _ in range(_WORKSPACES_MAX_PAGES):
        try:
            response = await client.auth_teams_list(cursor=cursor, limit=1000)
        except _SLACK_ERRORS as exc:
            error = (
                exc.response.get("error") if isinstance(exc, SlackApiError) else type(exc).__name__
            )
            log.info("auth.teams.list failed: %s (other workspaces count as foreign)", error)
            return None
        for team in response.get("teams") or []:
            if isinstance(team, Mapping) and isinstance(team.get("id"), str):
                teams.add(team["id"])
        cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
        if not cursor:
            break
    return frozenset(teams)


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

    async def is_admin(
        self, client: AsyncWebClient, user_id: str, team_id: str | None = None
    ) -> bool | None:
        """True for an admin or owner (of workspace `team_id` on Enterprise Grid: see
        `bot.access.is_admin_here`), False for anyone else, None when Slack will not say."""
        now = self._clock()
        key = f"{team_id or ''}:{user_id}"
        refused_at = self._refused.get(key)
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
        if is_admin_here(user, team_id):
            self._refused.pop(key, None)
            return True
        self._refused[key] = now
        self._refused.move_to_end(key)
        while len(self._refused) > _ADMIN_CACHE_MAX:
            self._refused.popitem(last=False)
        return False
