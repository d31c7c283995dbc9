"""`doctor`'s probes: the I/O behind each check, with short timeouts, read-only, never raising.

Each probe returns the facts bot.doctor.checks judges. Nothing here creates, migrates or writes:
the database is only looked at, the port is bound and released at once.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from bot.asana import AsanaClient, AsanaError
from bot.db import _sqlite_path, alembic_config, normalize_database_url
from bot.dbfile import SQLITE_HEADER
from bot.doctor.checks import AsanaAnswer, DatabaseFacts, SlackAnswer
from bot.http_limits import ListenError, bind_listener

#: Seconds any one probe may take: a doctor that hangs helps nobody.
TIMEOUT = 5.0


# ------------------------------------------------------------------------------ Slack


async def slack_call(api_url: str, token: str, method: str, **params: Any) -> SlackAnswer:
    """One Web API call, no retries; Slack's refusal and an unreachable Slack are both facts."""
    client = AsyncWebClient(token=token, base_url=api_url, timeout=int(TIMEOUT), retry_handlers=[])
    try:
        response = await asyncio.wait_for(client.api_call(method, params=params), TIMEOUT + 1)
    except SlackApiError as exc:
        return SlackAnswer(_body(exc.response.data), _scopes(exc.response.headers))
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return SlackAnswer({}, unreachable=type(exc).__name__)
    return SlackAnswer(_body(response.data), _scopes(response.headers))


def _body(data: object) -> dict[str, object]:
    return dict(data) if isinstance(data, Mapping) else {"ok": False, "error": "not_json"}


def _scopes(headers: Mapping[str, Any] | None) -> str | None:
    """The x-oauth-scopes header, whatever case the headers mapping keeps."""
    for key, value in (headers or {}).items():
        if str(key).lower() == "x-oauth-scopes":
            return str(value)
    return None


async def slack_socket_mode(api_url: str, app_token: str) -> SlackAnswer:
    """apps.connections.open with the app-level token (a ticket nobody uses expires by itself)."""
    return await slack_call(api_url, app_token, "apps.connections.open")


# ------------------------------------------------------------------------------ Asana


def _client(token: str, base_url: str) -> AsanaClient:
    return AsanaClient(token, base_url, timeout=TIMEOUT, max_retry_time=0, max_attempts=1)


def _refusal(exc: AsanaError) -> AsanaAnswer:
    return AsanaAnswer(kind=exc.kind.value, status=exc.status, message=str(exc))


async def asana_me(token: str, base_url: str) -> AsanaAnswer:
    """GET /users/me: whose token this is."""
    try:
        async with _client(token, base_url) as client:
            user = await client.get_me()
    except AsanaError as exc:
        return _refusal(exc)
    who = user.name or "?"
    if user.email:
        who += f" <{user.email}>"
    return AsanaAnswer(summary=f"token of {who}, user {user.gid}")


async def asana_export(token: str, base_url: str, gid: str) -> AsanaAnswer:
    """GET /organization_exports/GID: the export is readable with this token."""
    try:
        async with _client(token, base_url) as client:
            export = await client.get_export(gid)
    except AsanaError as exc:
        return _refusal(exc)
    org = export.organization_name or "?"
    state = export.raw_state or export.state.value
    return AsanaAnswer(
        summary=f"export {export.gid} is {state}, organization {org} ({export.organization_gid})"
    )


# ------------------------------------------------------------------------------ database


def head_revision() -> str:
    """The newest migration shipped with this version, read from the script directory."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise RuntimeError("no Alembic head in bot/migrations")
    return head


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


async def database_facts(url: str) -> DatabaseFacts:
    """A read-only look: the SQLite file or the PostgreSQL server, and its schema revision."""
    head = head_revision()
    normalized = normalize_database_url(url)
    if make_url(normalized).get_backend_name() == "sqlite":
        return await asyncio.to_thread(_sqlite_facts, normalized, head)
    return await _server_facts(normalized, head)


def _sqlite_facts(normalized: str, head: str) -> DatabaseFacts:
    path = _sqlite_path(normalized)
    if path is None:
        return DatabaseFacts(
            "an in-memory SQLite database",
            head,
            problem="it is forgotten at every restart, and so is every watch",
        )
    where = str(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return DatabaseFacts(where, head, missing=True, creatable=_creatable(path))
    except OSError as exc:
        return DatabaseFacts(where, head, problem=f"cannot be looked at: {exc.strerror}")
    if stat.S_ISDIR(info.st_mode):
        return DatabaseFacts(where, head, problem="is a directory, not a SQLite database file")
    if not os.access(path, os.R_OK | os.W_OK):
        return DatabaseFacts(where, head, problem="cannot be read and written by this user")
    if info.st_size == 0:  # `run` initialises an empty file like a missing one
        return DatabaseFacts(where, head, missing=True)
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except OSError as exc:
        return DatabaseFacts(where, head, problem=f"cannot be read: {exc.strerror}")
    if header != SQLITE_HEADER:
        return DatabaseFacts(
            where, head, problem="is not a SQLite database: it does not start with SQLite's header"
        )
    try:
        revision = _sqlite_revision(path)
    except sqlite3.Error as exc:
        return DatabaseFacts(where, head, problem=f"cannot be read as SQLite: {exc}")
    return DatabaseFacts(where, head, revision=revision, known=revision is None or _known(revision))


def _sqlite_revision(path: Path) -> str | None:
    """alembic_version read through a read-only connection (mode=ro: nothing is created)."""
    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=TIMEOUT)
    try:
        try:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise
        return str(row[0]) if row else None
    finally:
        connection.close()


def _creatable(path: Path) -> bool:
    """Whether `run` could create the file: the nearest existing parent is a writable directory."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)


async def _server_facts(normalized: str, head: str) -> DatabaseFacts:
    from sqlalchemy.ext.asyncio import create_async_engine

    parsed = make_url(normalized)
    where = parsed.render_as_string(hide_password=True)
    engine = create_async_engine(normalized, connect_args={"connect_timeout": int(TIMEOUT)})
    try:
        async with asyncio.timeout(TIMEOUT + 1), engine.connect() as conn:
            revision = await conn.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "orig", None) or exc
        first = str(reason).strip().splitlines()[0] if str(reason).strip() else type(exc).__name__
        return DatabaseFacts(where, head, problem=f"cannot connect: {first}")
    finally:
        await engine.dispose()
    return DatabaseFacts(where, head, revision=revision, known=revision is None or _known(revision))


# ------------------------------------------------------------------------------ port


def port_problem(host: str, port: int) -> str | None:
    """Bind HOST:PORT as `run` does and let go at once; the reason when that fails."""
    try:
        sock = bind_listener(host, port)
    except ListenError as exc:
        return str(exc)
    sock.close()
    return None


async def archive_writable(url: str) -> str | None:
    """Write, read back and delete a probe object at ARCHIVE_URL; why not, or None when it can.

    The probe's name (`asana-export-bot-probe-<random>`) is outside the archive naming scheme,
    so retention would never touch one left behind by an interrupted run.
    """
    import uuid

    from bot.archive.storage import ArchiveStorage, StorageError

    name = f"asana-export-bot-probe-{uuid.uuid4().hex}"
    body = b"asana-export-bot doctor: this object may be deleted\n"
    try:
        storage = ArchiveStorage(url)
        await asyncio.wait_for(storage.put_bytes(name, body), 20)
        if await asyncio.wait_for(storage.read_bytes(name), 20) != body:
            return "the probe object read back differs from what was written"
        await asyncio.wait_for(storage.delete(name), 20)
    except StorageError as exc:
        return str(exc)
    except TimeoutError:
        return "the store did not answer within 20 s"
    return None
