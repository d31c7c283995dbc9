"""The long-lived services one bot process shares between its listeners and its scheduler."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from slack_sdk.web.async_client import AsyncWebClient

from bot.asana import AsanaClient
from bot.config import Settings
from bot.decisions import PollPolicy
from bot.fair_use import FairUse
from bot.metrics import Metrics
from bot.notify import Notifier
from bot.ratelimit import TokenBucket
from bot.slack_org import Installation, WorkspaceAdmins
from bot.store import Store


def utc_now() -> datetime:
    """The real clock; tests and pure code receive `now` instead of calling this."""
    return datetime.now(UTC)


def replica_id() -> str:
    """Who holds a lease: host and pid plus a random part, unique across restarts."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Runtime:
    """Settings plus the pooled clients and the store, built once per process in `bot.app`.

    Every service (the listeners, `bot.lookup`, `bot.watching`, the watcher, the recovery job,
    the notifier) takes this one object rather than the pieces it needs.
    """

    settings: Settings
    asana: AsanaClient
    store: Store
    slack: AsyncWebClient
    budget: TokenBucket
    #: Admits people's requests to `budget` (polling's reserved share, per-user limits).
    fair: FairUse
    now: Callable[[], datetime] = field(default=utc_now)
    #: Who installed the bot (auth.test): decides who counts as a member of our organization.
    installation: Installation = field(default_factory=Installation)
    #: Who is an admin or owner of the workspace (users.info, cached briefly): who may `new`.
    admins: WorkspaceAdmins = field(default_factory=WorkspaceAdmins)
    #: This replica's name in the database's leases.
    replica: str = field(default_factory=replica_id)
    #: This process's Prometheus metrics (its own registry), served at /metrics.
    metrics: Metrics = field(default_factory=Metrics)
    #: Every Slack post and edit goes through it (the token pause, once-keys, link policy).
    notify: Notifier = field(init=False)

    def __post_init__(self) -> None:
        self.notify = Notifier(self)
        self.metrics.track_budget(self.budget)

    @property
    def poll_policy(self) -> PollPolicy:
        s = self.settings
        return PollPolicy(
            initial=s.POLL_INITIAL_SECONDS,
            factor=s.POLL_FACTOR,
            cap=s.POLL_MAX_SECONDS,
            jitter=s.POLL_JITTER,
            paused_retry=s.PAUSED_RETRY_SECONDS,
        )
