"""Who may use the bot where, and where a download link may be posted: pure decisions."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_SLACK_ID = re.compile(r"^[A-Z0-9]{2,40}$")


class LinkPolicy(enum.StrEnum):
    """Where the bot may post a download link (the whole organization's data) for all to see."""

    PRIVATE = "private"  # private channels, DMs and group DMs not shared with another org
    BUTTON = "button"  # never in a channel: a button shows it to whoever presses it
    ANYWHERE = "anywhere"  # every watching channel gets the link


def parse_id_list(raw: str) -> frozenset[str]:
    """`U123, U456` -> {"U123", "U456"}; raises ValueError naming the first bad entry."""
    ids = {part.strip() for part in raw.replace(";", ",").split(",") if part.strip()}
    for slack_id in ids:
        if not _SLACK_ID.match(slack_id):
            raise ValueError(f"{slack_id[:20]!r} is not a Slack ID (like U0123ABCD or C0123ABCD)")
    return frozenset(ids)


def is_allowed(
    user_id: str | None,
    channel_id: str | None,
    *,
    allowed_users: frozenset[str],
    allowed_channels: frozenset[str],
) -> bool:
    """Empty lists allow everyone; otherwise both the user and the channel must be listed."""
    if allowed_users and (user_id or "") not in allowed_users:
        return False
    return not (allowed_channels and (channel_id or "") not in allowed_channels)


def is_private_to_our_org(channel: Mapping[str, Any] | None) -> bool:
    """A private channel, DM or group DM that no other organization can read.

    Unknown (None: conversations.info failed) counts as not private: the safe answer.
    """
    if not channel:
        return False
    private = bool(channel.get("is_private") or channel.get("is_im") or channel.get("is_mpim"))
    return private and not is_shared_outside(channel)


def is_shared_outside(channel: Mapping[str, Any] | None) -> bool:
    """Shared (or being shared) with another organization; unknown (None) counts as shared.

    `is_shared` without `is_org_shared` is a channel shared with another workspace that is not
    part of our Enterprise org; `is_org_shared` alone stays inside it.
    """
    if not channel:
        return True
    return bool(
        channel.get("is_ext_shared")
        or channel.get("is_pending_ext_shared")
        or (channel.get("is_shared") and not channel.get("is_org_shared"))
    )


def may_post_link(policy: LinkPolicy, channel: Mapping[str, Any] | None) -> bool:
    """Whether the link itself may appear in a message everyone in the channel sees."""
    if policy is LinkPolicy.ANYWHERE:
        return True
    if policy is LinkPolicy.BUTTON:
        return False
    return is_private_to_our_org(channel)


@dataclass(frozen=True, slots=True)
class OrgIdentity:
    """Who installed the bot, from auth.test: the workspace and, on Enterprise Grid, the org.

    Installed org-wide on a Grid org (`org_wide`), the token is the org's: `team_id` is what
    auth.test says (the org's E... id) and the org's workspaces are asked separately
    (auth.teams.list), since each click names only the clicker's own workspace.
    """

    team_id: str
    enterprise_id: str | None = None
    org_wide: bool = False


def clicker_team_id(body: Mapping[str, Any]) -> str | None:
    """The clicker's home in an interaction payload: `user.team_id`.

    Slack puts the clicker's own workspace there (a Slack Connect guest's, not ours, which is in
    `team.id`), or their Enterprise org's id (E...) for a member of an Enterprise org.
    """
    user = body.get("user") if isinstance(body, Mapping) else None
    team = user.get("team_id") if isinstance(user, Mapping) else None
    return team if isinstance(team, str) and team else None


def payload_team_id(body: Mapping[str, Any]) -> str | None:
    """The workspace an interaction payload comes from.

    `team.id` where Slack sends it; an org-wide install on Enterprise Grid may get `team: null`,
    and then the acting user's workspace (`user.team_id`) or the view's is the one.
    """
    if not isinstance(body, Mapping):
        return None
    for holder, key in (("team", "id"), ("user", "team_id"), ("view", "team_id")):
        part = body.get(holder)
        value = part.get(key) if isinstance(part, Mapping) else None
        if isinstance(value, str) and value:
            return value
    top = body.get("team_id")
    return top if isinstance(top, str) and top else None


def is_our_member(
    user_team_id: str | None,
    org: OrgIdentity | None,
    workspaces: frozenset[str] = frozenset(),
) -> bool:
    """Whether a user whose home is `user_team_id` belongs to the installing organization.

    Our workspace, or our Enterprise org: its id, or one of its workspaces that the org-wide
    install was granted (`workspaces`, from auth.teams.list), so a member of another workspace
    of the same org is one of us. Anything unknown (no team in the payload, installation not
    known yet) is foreign.
    """
    if org is None or not user_team_id:
        return False
    return (
        user_team_id == org.team_id
        or (bool(org.enterprise_id) and user_team_id == org.enterprise_id)
        or (org.org_wide and user_team_id in workspaces)
    )


class ClickVerdict(enum.StrEnum):
    """What "Get a fresh link" may show its clicker."""

    GIVE = "give"  # the link, ephemerally
    FOREIGN_USER = "foreign_user"  # the clicker belongs to another organization
    SHARED_CHANNEL = "shared_channel"  # the channel is shared outside (or Slack would not say)


def may_give_link(
    policy: LinkPolicy,
    *,
    clicker_team: str | None,
    org: OrgIdentity | None,
    channel: Mapping[str, Any] | None,
    workspaces: frozenset[str] = frozenset(),
) -> ClickVerdict:
    """Whether the clicker of "Get a fresh link" may receive the link (ephemerally).

    Under `anywhere` everyone may (the link is posted in the channel anyway). Under `private` and
    `button` only a member of our organization, and only in a channel that no other organization
    shares (`channel` is conversations.info's object; None, Slack would not say, is refused).
    `workspaces` are the workspaces of our Enterprise org (an org-wide install's).
    """
    if policy is LinkPolicy.ANYWHERE:
        return ClickVerdict.GIVE
    if not is_our_member(clicker_team, org, workspaces):
        return ClickVerdict.FOREIGN_USER
    if is_shared_outside(channel):
        return ClickVerdict.SHARED_CHANNEL
    return ClickVerdict.GIVE


def may_list_watch(watch_channel: str, *, asked_in: str, asker_is_member: bool | None) -> bool:
    """`list all`: a watch is shown where it was asked from, or to a member of its channel.

    `asker_is_member` is Slack's answer (None: Slack would not say, so the watch stays hidden).
    A watch names its channel, its export and the export's organization: a private channel's
    watch must not reach someone outside it, and public channels get the same rule so that a
    guest from another organization learns nothing about channels of ours.
    """
    return watch_channel == asked_in or asker_is_member is True


def is_admin_here(user: Mapping[str, Any], team_id: str | None = None) -> bool:
    """Whether users.info's `user` is an admin or owner of workspace `team_id` (any: None).

    On Enterprise Grid one user id spans the org's workspaces, and users.info's flags are the
    user's own workspace's (`user.team_id`): they count where that workspace asks, and an org
    admin or owner (`enterprise_user`) counts in every workspace of the org.
    """
    if user.get("deleted"):
        return False
    admin = bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))
    org = user.get("enterprise_user")
    if isinstance(org, Mapping) and (
        org.get("is_admin") or org.get("is_owner") or org.get("is_primary_owner")
    ):
        return True
    home = user.get("team_id")
    if not admin or not team_id or not isinstance(home, str) or not home:
        return admin
    return home == team_id or not isinstance(org, Mapping)


def may_create_export(
    user_id: str | None, *, admin_users: frozenset[str], workspace_admin: bool | None
) -> bool:
    """Whether this person may start an export of a whole organization (`new`, schedules).

    ADMIN_USERS, when set, is the whole list: nobody else may, workspace admins included. When
    it is empty, the workspace's admins and owners may (`workspace_admin` is Slack's users.info
    `is_admin or is_owner`; None, Slack would not say, is refused).
    """
    if admin_users:
        return bool(user_id) and user_id in admin_users
    return workspace_admin is True
