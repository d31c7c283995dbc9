"""Asana's answers read into our types: pure functions, no I/O, `now` passed in.

Tolerant of missing, unknown and extra fields (Asana adds fields and states over time), strict
about what would mislead a person (an answer about another export, a link on an unfinished one),
and careful that nothing a server says carries a secret or a URL query into our messages.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from bot.asana.errors import (
    BY_STATUS,
    AsanaError,
    AsanaMalformedResponse,
    AsanaMissingData,
    AsanaServerError,
    AsanaWrongExport,
)
from bot.models import Export, ExportState

_URL_QUERY = re.compile(r"(https?://[^\s?#]+)[?#]\S*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_MAX_MESSAGE = 300


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


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP-date; None when absent or bad."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


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


@dataclass(frozen=True, slots=True)
class AsanaUser:
    """Who a token belongs to (GET /users/me): `doctor` names it to show the token works."""

    gid: str
    name: str | None = None
    email: str | None = None


def parse_user(payload: object) -> AsanaUser:
    """Asana's UserResponse (`{"data": {"gid", "name", "email", ...}}`) as an AsanaUser."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        raise AsanaMissingData()
    gid = _opt_str(data.get("gid"))
    if gid is None:
        raise AsanaMalformedResponse(
            "Asana sent a response we could not understand: the user has no gid"
        )
    name, email = data.get("name"), data.get("email")
    return AsanaUser(
        gid=gid,
        name=scrub(name) if isinstance(name, str) and name else None,
        email=scrub(email) if isinstance(email, str) and email else None,
    )


def parse_json(body: bytes, *, status: int, gid: str | None) -> object:
    """A 2xx body as JSON, or AsanaMalformedResponse (asking again gets the same body)."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise AsanaMalformedResponse(
            "Asana sent a response we could not understand: the body is not JSON",
            status=status,
            gid=gid,
        ) from None


def error_from_response(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
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
    if status in BY_STATUS:
        cls = BY_STATUS[status]
    elif status >= 500:
        cls = AsanaServerError
    elif 400 <= status < 500:
        cls = AsanaError  # an unknown 4xx: a request problem, not Asana being down
    else:
        return AsanaMalformedResponse(
            f"Asana sent an unexpected HTTP status {status}", status=status, gid=gid
        )
    return cls(status=status, message=message, phrase=phrase, retry_after=retry_after, gid=gid)
