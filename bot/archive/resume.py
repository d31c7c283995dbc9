"""What a download's answers mean for an archive in progress, and whether it arrived intact (pure).

The transfer (`bot.archive.transfer`) asks, after every answer and every failure, what to do:

- CONTINUE: the answer is the bytes we asked for (200 from the start, or 206 from where we are);
- RESUME: ask the same link again, with `Range: bytes=<done>-` and `If-Range` (a dropped or
  stalled connection, a 5xx or 429);
- REFRESH_LINK: the link is dead (S3 says 403 AccessDenied "Request has expired" after an hour):
  GET the export from Asana for a fresh download_url, then resume from where we are;
- START_OVER: the server answered something else than what we asked (it ignored Range, the
  file changed under If-Range, the bytes arrived but do not match their checksum): abort the
  upload and start from byte 0, which is the only safe thing to do with bytes already sent on.

Every failure counts one attempt; past `max_attempts` the transfer gives up with the reason.

Checksums, decided here: size and SHA-256 are always computed on the way. The size must equal
Content-Length (of the 200, or the total of a 206's Content-Range). Asana's link is a presigned
S3 URL, and S3 gives one of two whole-object checksums: an `x-amz-checksum-sha256` header (base64
of the SHA-256, when the object was stored with one) and the ETag, which is the MD5 of the bytes
for an object uploaded in one part (32 hex digits; a multipart ETag has a `-N` suffix and is no
MD5). Whichever of them is there is checked; MD5 is computed only when the ETag is one.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

from bot.backoff import exponential

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_MD5_ETAG = re.compile(r'^"?([0-9a-fA-F]{32})"?$')


class Step(enum.StrEnum):
    CONTINUE = "continue"
    RESUME = "resume"
    REFRESH_LINK = "refresh_link"
    START_OVER = "start_over"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one answer; for CONTINUE, the file's total size when the answer says."""

    step: Step
    reason: str = ""
    total: int | None = None


def range_headers(done: int, validator: str | None) -> dict[str, str]:
    """The headers of a request for what is still missing (none from the start).

    `Accept-Encoding: identity`: the file is stored as served, never decoded on the way.
    """
    headers = {"Accept-Encoding": "identity"}
    if done > 0:
        headers["Range"] = f"bytes={done}-"
        if validator:
            headers["If-Range"] = validator
    return headers


def validator_of(headers: Mapping[str, str]) -> str | None:
    """What `If-Range` may carry: a strong ETag, else Last-Modified (RFC 9110 13.1.5)."""
    etag = headers.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("last-modified")


def judge(status: int, headers: Mapping[str, str], *, done: int, total: int | None) -> Verdict:
    """What one answer to a download request means, given `done` bytes already received.

    `headers` are lower-cased; `total` is the size the first answer announced, if any.
    """
    if status == 200:
        if done > 0:
            return Verdict(Step.START_OVER, "the server ignored Range and sent the whole file")
        return Verdict(Step.CONTINUE, total=_int(headers.get("content-length")))
    if status == 206:
        match = _CONTENT_RANGE.match(headers.get("content-range", "").strip())
        if match is None or int(match[1]) != done:
            return Verdict(Step.START_OVER, "the server sent another range than asked")
        size = None if match[3] == "*" else int(match[3])
        if total is not None and size is not None and size != total:
            return Verdict(Step.START_OVER, "the file's size changed")
        return Verdict(Step.CONTINUE, total=size if size is not None else total)
    if status in (400, 401, 403, 404, 410):
        return Verdict(Step.REFRESH_LINK, f"the download link was refused ({status})")
    if status == 416:
        return Verdict(Step.START_OVER, "the server refused the range (416)")
    return Verdict(Step.RESUME, f"the download server answered {status}")


def wants_md5(etag: str | None) -> bool:
    """True when the ETag is an MD5 of the bytes (S3, one part), so MD5 is worth computing."""
    return etag is not None and _MD5_ETAG.match(etag.strip()) is not None


def mismatch(
    *,
    size: int,
    total: int | None,
    sha256: bytes,
    md5: bytes | None,
    etag: str | None,
    checksum_sha256: str | None,
) -> str | None:
    """Why the bytes received are not the file (None when every check that applies passes)."""
    if total is not None and size != total:
        return f"received {size} bytes of {total}"
    if checksum_sha256:
        try:
            expected = base64.b64decode(checksum_sha256.strip(), validate=True)
        except (binascii.Error, ValueError):
            expected = None
        if expected is not None and len(expected) == 32 and expected != sha256:
            return "the SHA-256 does not match the server's x-amz-checksum-sha256"
    if md5 is not None and etag is not None:
        match = _MD5_ETAG.match(etag.strip())
        if match is not None and bytes.fromhex(match[1]) != md5:
            return "the MD5 does not match the server's ETag"
    return None


def retry_delay(attempt: int, initial: float, cap: float = 60.0) -> float:
    """Seconds to wait before attempt `attempt + 1` (1 after the first failure, doubling)."""
    return exponential(max(0, attempt - 1), initial, 2.0, cap)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
