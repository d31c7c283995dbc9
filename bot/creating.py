"""Create an export of an organization and watch it in a channel (`new`; schedules later).

`start_export` is the one way the bot asks Asana for a new export. It records the request under
a unique key BEFORE calling Asana, so a Slack retry or a replayed request (same key), on any
replica, never creates a second export; it offers an export of the same organization that is
still running instead of starting another (unless forced); and it never repeats a POST that may
have reached Asana: a timeout after sending is an unknown outcome, said as such. It returns a
typed outcome, so a schedule occurrence can reuse it and word its own posts.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from bot import audit, messages, watching
from bot.access import may_create_export
from bot.asana import AsanaError
from bot.fair_use import Refusal
from bot.messages import Message
from bot.models import Export, ProblemKind
from bot.runtime import Runtime
from bot.store import CreationOutcome, CreationRow, ExportRow

log = logging.getLogger(__name__)

#: Asana's answers after which nothing was created: it said no, or never got the request.
_REFUSALS = (
    ProblemKind.BAD_REQUEST,
    ProblemKind.UNAUTHORIZED,
    ProblemKind.PAYMENT_REQUIRED,
    ProblemKind.FORBIDDEN,
    ProblemKind.NOT_FOUND,
    ProblemKind.RATE_LIMITED,
)


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """Who asks for an export of which organization, where it is watched, and the request key."""

    organization_gid: str
    team_id: str
    channel_id: str
    user_id: str
    request_key: str
    force: bool = False
    #: A person's request spends their fair-use share; a schedule's would not.
    by_person: bool = True


@dataclass(frozen=True, slots=True)
class Started:
    """Asana accepted: the new export (pending)."""

    export: Export


@dataclass(frozen=True, slots=True)
class Running:
    """Not started: an export of this organization created through the bot is still running."""

    creation: CreationRow
    export: ExportRow


@dataclass(frozen=True, slots=True)
class AlreadyHandled:
    """Not started: this very request was handled before (a Slack retry, a replay)."""

    creation: CreationRow


@dataclass(frozen=True, slots=True)
class Refused:
    """Not started: Asana said no, or never got the request (`kind` says why)."""

    kind: ProblemKind
    message: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class SlowDown:
    """Not started: the person's fair-use share says not now (no Asana call was made)."""

    refusal: Refusal


@dataclass(frozen=True, slots=True)
class Unknown:
    """The request may have reached Asana and no usable answer came: never repeated blindly."""

    kind: ProblemKind


Outcome = Started | Running | AlreadyHandled | Refused | SlowDown | Unknown


def request_key(
    *, team_id: str, user_id: str, channel_id: str, text: str, trigger_id: str, timestamp: str
) -> str:
    """The key that is equal for a command and its retries or replays, and for nothing else.

    Slack sends a fresh trigger_id with every slash command and the same one in a retry (the
    body is the same bytes); a replay is the same body. Without a trigger_id (never from Slack)
    the request timestamp stands in, which a replay also repeats.
    """
    nonce = trigger_id or f"ts:{timestamp}"
    raw = "\x1f".join((team_id, user_id, channel_id, text, nonce))
    return hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()


def _unknown_outcome(exc: AsanaError) -> bool:
    """Whether Asana may have acted: the request went out and no clear "no" came back."""
    if not exc.request_sent:
        return False
    return exc.kind not in _REFUSALS


async def start_export(runtime: Runtime, request: CreateRequest) -> Outcome:
    """Ask Asana for one export of the organization, at most once per request key."""
    store, now = runtime.store, runtime.now()
    creation, first = await store.claim_creation(
        request_key=request.request_key,
        team_id=request.team_id,
        channel_id=request.channel_id,
        user_id=request.user_id,
        organization_gid=request.organization_gid,
        now=now,
    )
    if not first:
        log.info(
            "creation request %s seen again (retry or replay): not asking Asana again",
            creation.id,
        )
        return AlreadyHandled(creation)
    if not request.force:
        running = await store.running_creation(request.organization_gid)
        if running is not None:
            await store.record_creation(creation.id, outcome=CreationOutcome.OFFERED, now=now)
            return Running(*running)
    if request.by_person:
        refused = runtime.fair.admit(request.user_id)
        if refused is not None:
            runtime.metrics.deferred.labels(refused.limit.value).inc()
            await store.record_creation(creation.id, outcome=CreationOutcome.REFUSED, now=now)
            return SlowDown(refused)
    try:
        export = await runtime.asana.create_export(request.organization_gid)
    except AsanaError as exc:
        unknown = _unknown_outcome(exc)
        log.warning(
            "creating an export of organization %s %s: %s",
            request.organization_gid,
            "has an unknown outcome" if unknown else "was refused",
            exc.kind,
        )
        outcome = CreationOutcome.UNKNOWN if unknown else CreationOutcome.REFUSED
        await store.record_creation(creation.id, outcome=outcome, now=runtime.now())
        if unknown:
            return Unknown(exc.kind)
        return Refused(exc.kind, exc.message, exc.retry_after)
    await store.record_creation(
        creation.id, outcome=CreationOutcome.CREATED, now=runtime.now(), export_gid=export.gid
    )
    log.info(
        "created export %s of organization %s for user %s",
        export.gid,
        request.organization_gid,
        request.user_id[:20],
    )
    return Started(export)


async def may_create(runtime: Runtime, user_id: str, team_id: str | None = None) -> bool | None:
    """Whether this person may start exports (from workspace `team_id`): True, False, or None
    when Slack would not say.

    The workspace matters only to an org-wide install on Enterprise Grid, where one bot serves
    several workspaces and a workspace's admins are admins there only.
    """
    admin_users = runtime.settings.admin_users
    if admin_users:
        return may_create_export(user_id, admin_users=admin_users, workspace_admin=None)
    installation = await runtime.installation.get(runtime.slack)
    where = team_id if installation is not None and installation.org_wide else None
    workspace_admin = await runtime.admins.is_admin(runtime.slack, user_id, where)
    if workspace_admin is None:
        return None
    return may_create_export(user_id, admin_users=admin_users, workspace_admin=workspace_admin)


async def new_for_person(
    runtime: Runtime,
    *,
    org_gid: str | None,
    force: bool,
    team_id: str,
    channel_id: str,
    user_id: str,
    key: str,
) -> Message:
    """`/asana-export new`: authorize, start the export, watch it here; the answer to show."""
    settings = runtime.settings
    verdict = await may_create(runtime, user_id, team_id)
    if not verdict:
        log.warning("refused `new` to user %s (not an admin: %s)", user_id[:20], verdict)
        return messages.render_not_admin(sorted(settings.admin_users), unknown=verdict is None)
    organization = org_gid or settings.ASANA_ORGANIZATION_GID
    if not organization:
        return messages.render_no_organization(settings.SLACK_COMMAND)
    request = CreateRequest(
        organization_gid=organization,
        team_id=team_id,
        channel_id=channel_id,
        user_id=user_id,
        request_key=key,
        force=force,
    )
    outcome = await start_export(runtime, request)
    now = runtime.now()
    match outcome:
        case Started(export):
            watched = await watching.answer_for_export(
                runtime,
                export,
                team_id=team_id,
                channel_id=channel_id,
                user_id=user_id,
                audited=False,
            )
            # After the card: its thread is where the line goes.
            audit.created_export(
                runtime,
                export.gid,
                user_id=user_id,
                channel_id=channel_id,
                organization_gid=organization,
            )
            return messages.render_created(export, watched)
        case Running(creation, row):
            return messages.render_running_offer(
                row.to_export(),
                requested_by=creation.user_id,
                requested_at=creation.requested_at,
                now=now,
                command=settings.SLACK_COMMAND,
            )
        case AlreadyHandled(creation):
            return messages.render_already_handled(creation.export_gid)
        case SlowDown(refusal):
            return messages.render_fair_use_refusal(
                refusal, per_minute=settings.USER_REQUESTS_PER_MINUTE
            )
        case Refused(kind, message, retry_after):
            return messages.render_create_refused(
                kind, org_gid=organization, asana_message=message, retry_after=retry_after
            )
        case Unknown():
            return messages.render_create_unknown(organization, command=settings.SLACK_COMMAND)
    raise AssertionError(outcome)  # pragma: no cover - the union is closed
