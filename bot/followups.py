"""The follow-up job: stall notes (`bot.stall`) and link expiry (`bot.link_expiry`), run by the
scheduler every FOLLOWUP_SECONDS on every replica (each note and edit is claimed in the database,
so replicas do not repeat each other)."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.exc import OperationalError

from bot.db import DatabaseUnavailable, describe_operational_error
from bot.link_expiry import expire_links
from bot.runtime import Runtime
from bot.stall import nudge_stalled

log = logging.getLogger(__name__)

#: How often the job runs: a note or an edit comes at most this late.
FOLLOWUP_SECONDS = 30.0


class Followups:
    """The follow-up job of one replica; safe to run in several replicas at once."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._lock = asyncio.Lock()

    async def run(self) -> tuple[int, int]:
        """One pass: (stall notes posted, posts edited). Never raises."""
        if self._lock.locked():
            return (0, 0)
        async with self._lock:
            try:
                return (await nudge_stalled(self.runtime), await expire_links(self.runtime))
            except DatabaseUnavailable as exc:
                log.error("follow-ups skipped: %s", exc)
            except OperationalError as exc:
                log.warning(
                    "follow-ups skipped, database unavailable: %s", describe_operational_error(exc)
                )
            except Exception:
                log.exception("follow-ups failed; they will run again")
            return (0, 0)
