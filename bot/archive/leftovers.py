"""What a killed transfer leaves behind in the archive store, and removing it.

obstore aborts a multipart upload when the stream it reads raises, but a replica that is
SIGKILLed (or whose put is cancelled) cannot: S3 keeps the upload's parts, invisible and billed,
and a local directory keeps the `<name>#<n>` staging file. obstore can neither list nor abort
multipart uploads, and its listing hides staging files, so this module reaches past it:

- S3: ListMultipartUploads for the object's key, then AbortMultipartUpload for each upload of
  exactly that key. Two SigV4-signed requests (signed here, tested against botocore's signer)
  with the same `AWS_*` variables obstore reads. Without static keys in the environment (an
  instance role, say) nothing is cleaned: a bucket lifecycle rule
  (AbortIncompleteMultipartUpload) is then the way, and the README says so.
- file://: the `<name>#<digits>` files beside the object's final name.
- Other stores (gs://, az://): nothing here. Azure drops uncommitted blocks by itself within
  days; GCS wants the same lifecycle rule as S3.

The replica that takes an archive over calls `clean_leftovers` before it streams, so whatever
the dead one left is gone before the new object appears.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree

import httpx

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_STAGING_SUFFIX = re.compile(r"#[0-9]+$")
#: Listing pages followed at most (1,000 uploads each): more than one key can ever collect.
_MAX_PAGES = 20


class CleanupError(Exception):
    """The store refused or did not answer; the message names no credentials."""


async def clean_leftovers(
    url: str,
    path: str,
    *,
    env: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    now: datetime | None = None,
) -> int:
    """Remove what interrupted transfers of `path` (relative to the archive `url`) left behind.

    Returns how many leftovers were removed. Objects themselves are never touched, only
    in-progress uploads of exactly this key and staging files of exactly this name.
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        return _clean_staging_files(Path(parts.path) / path)
    if parts.scheme in ("s3", "s3a"):
        settings = S3Settings.from_env(os.environ if env is None else env)
        if settings is None:
            return 0
        key = "/".join(p for p in (parts.path.strip("/"), path.strip("/")) if p)
        async with httpx.AsyncClient(transport=transport, timeout=30) as client:
            return await _abort_uploads(client, settings, parts.netloc, key, now)
    return 0


# ------------------------------------------------------------------------------ local files


def _clean_staging_files(final: Path) -> int:
    removed = 0
    try:
        entries = list(os.scandir(final.parent))
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise CleanupError(f"cannot list {final.parent}: {exc.strerror}") from None
    for entry in entries:
        name = entry.name
        if name.startswith(final.name + "#") and _STAGING_SUFFIX.search(name[len(final.name) :]):
            try:
                os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise CleanupError(f"cannot remove {entry.path}: {exc.strerror}") from None
    return removed


# ------------------------------------------------------------------------------ S3


@dataclass(frozen=True)
class S3Settings:
    """What signing needs, from the same variables obstore reads."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None
    region: str
    endpoint: str | None
    virtual_hosted: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> S3Settings | None:
        key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
        if not key or not secret:
            return None
        endpoint = (
            env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or env.get("AWS_ENDPOINT")
        )
        return cls(
            access_key_id=key,
            secret_access_key=secret,
            session_token=env.get("AWS_SESSION_TOKEN") or env.get("AWS_TOKEN") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            endpoint=endpoint.rstrip("/") if endpoint else None,
            virtual_hosted=env.get("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "").lower() == "true",
        )

    def bucket_url(self, bucket: str) -> str:
        """The bucket's base URL, path style unless asked otherwise (as object_store does)."""
        endpoint = self.endpoint or f"https://s3.{self.region}.amazonaws.com"
        if self.virtual_hosted:
            scheme, _, host = endpoint.partition("://")
            return f"{scheme}://{bucket}.{host}"
        return f"{endpoint}/{bucket}"


async def _abort_uploads(
    client: httpx.AsyncClient, s3: S3Settings, bucket: str, key: str, now: datetime | None
) -> int:
    base = s3.bucket_url(bucket)
    upload_ids: list[str] = []
    markers: dict[str, str] = {}
    for _ in range(_MAX_PAGES):
        query = {"uploads": "", "prefix": key, **markers}
        answer = await _send(client, s3, "GET", base + "/", query, now)
        found, markers = _parse_uploads(answer.content)
        upload_ids += [upload_id for k, upload_id in found if k == key]
        if not markers:
            break
    for upload_id in upload_ids:
        await _send(
            client, s3, "DELETE", f"{base}/{quote(key, safe='/~')}", {"uploadId": upload_id}, now
        )
    return len(upload_ids)


async def _send(
    client: httpx.AsyncClient,
    s3: S3Settings,
    method: str,
    url: str,
    query: dict[str, str],
    now: datetime | None,
) -> httpx.Response:
    headers = sign(s3, method, url, query, now or datetime.now(UTC))
    full = url + "?" + canonical_query(query)
    try:
        answer = await client.request(method, full, headers=headers)
    except httpx.HTTPError as exc:
        raise CleanupError(f"{method} to the store failed: {type(exc).__name__}") from None
    if answer.status_code == 404 and method == "DELETE":
        return answer  # aborted meanwhile (by another replica or a lifecycle rule)
    if answer.status_code >= 300:
        raise CleanupError(f"{method} answered {answer.status_code}: {_s3_code(answer.content)}")
    return answer


def _parse_uploads(body: bytes) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(key, upload id) pairs of one ListMultipartUploads page, and the next page's markers."""
    try:
        root = ElementTree.fromstring(body)  # noqa: S314 - the configured store's own answer
    except ElementTree.ParseError:
        raise CleanupError("the store's upload listing is not XML") from None
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    found = [
        (u.findtext(f"{ns}Key", ""), u.findtext(f"{ns}UploadId", ""))
        for u in root.iter(f"{ns}Upload")
    ]
    if root.findtext(f"{ns}IsTruncated", "false").lower() != "true":
        return found, {}
    markers = {
        "key-marker": root.findtext(f"{ns}NextKeyMarker", ""),
        "upload-id-marker": root.findtext(f"{ns}NextUploadIdMarker", ""),
    }
    return found, markers if markers["key-marker"] else {}


def _s3_code(body: bytes) -> str:
    try:
        return ElementTree.fromstring(body).findtext("Code") or "no error code"  # noqa: S314
    except ElementTree.ParseError:
        return "no error code"


# ------------------------------------------------------------------------------ SigV4


def _uri_encode(value: str, *, keep_slash: bool = False) -> str:
    return quote(value, safe="-_.~/" if keep_slash else "-_.~")


def canonical_query(query: Mapping[str, str]) -> str:
    return "&".join(
        f"{_uri_encode(k)}={_uri_encode(v)}"
        for k, v in sorted((str(k), str(v)) for k, v in query.items())
    )


def sign(
    s3: S3Settings, method: str, url: str, query: Mapping[str, str], now: datetime
) -> dict[str, str]:
    """The headers that authenticate one bodiless S3 request (AWS Signature Version 4)."""
    parts = urlsplit(url)
    amz_date = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    headers = {
        "host": parts.netloc,
        "x-amz-content-sha256": EMPTY_SHA256,
        "x-amz-date": amz_date,
    }
    if s3.session_token:
        headers["x-amz-security-token"] = s3.session_token
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            method,
            parts.path or "/",  # already encoded once by the caller, as S3 wants
            canonical_query(query),
            "".join(f"{name}:{headers[name].strip()}\n" for name in sorted(headers)),
            signed,
            EMPTY_SHA256,
        ]
    )
    scope = f"{day}/{s3.region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + s3.secret_access_key).encode()
    for piece in (day, s3.region, "s3", "aws4_request"):
        key = hmac.new(key, piece.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={s3.access_key_id}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    del headers["host"]  # httpx sends it from the URL
    return headers
