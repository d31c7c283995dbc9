"""The pure parts of archiving: names, manifest, retention, what a download answer means,
checksums, and how often the card may be edited."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.archive import naming, resume
from bot.archive.naming import (
    Manifest,
    archive_name,
    extension_of,
    parse_archive_path,
    select_expired,
    url_problem,
)
from bot.archive.progress import EditThrottle
from bot.archive.resume import Step, judge, mismatch

ORG = "1100000000000001"
WHEN = datetime(2026, 11, 28, 23, 10, tzinfo=UTC)


# -- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("disposition", "url", "ext"),
    [
        ('attachment; filename="domain_export_1_2.json.gz"', None, ".json.gz"),
        ("attachment; filename*=UTF-8''export%20%C3%BC.ZIP", None, ".zip"),
        (None, "https://s3.example/a/b/domain_export_1_2.json.gz?X-Amz-Signature=x", ".json.gz"),
        ('attachment; filename="../../etc/passwd"', "https://x/y.tar.gz", ".tar.gz"),
        ('attachment; filename="a.b.c.d.json.gz"', None, ".d.json.gz"),  # three at most
        ('attachment; filename="x.manifest.json"', None, ""),
        ('attachment; filename="bad.ex/t"', "https://x/file", ""),
        ('attachment; filename="x.j$on"', "https://x/y.zip", ".zip"),
        (None, None, ""),
        ("garbage;;;", "https://x/", ""),
    ],
)
def test_the_extension_comes_from_the_file_served(
    disposition: str | None, url: str | None, ext: str
) -> None:
    assert extension_of(disposition, url) == ext


def test_archive_names_and_their_manifests() -> None:
    name = archive_name(ORG, WHEN, "1200000000000901", ".json.gz")
    assert name.path == f"{ORG}/2026-11-28-1200000000000901.json.gz"
    assert name.manifest_path == f"{ORG}/2026-11-28-1200000000000901.manifest.json"
    assert parse_archive_path(name.path) == name
    assert parse_archive_path(name.manifest_path) is None
    assert naming.is_manifest_path(name.manifest_path)
    assert archive_name(None, None, "7", "").path == "0/0000-00-00-7"
    for bad in (("x1", WHEN, "1", ""), (ORG, WHEN, "1/2", ""), (ORG, WHEN, "1", ".manifest.json")):
        with pytest.raises(ValueError):
            archive_name(*bad)
    for foreign in ("notes.txt", f"{ORG}/notes.txt", f"{ORG}/2026-11-28-x1.gz", "x/2026-1-1-1.gz"):
        assert parse_archive_path(foreign) is None


def test_the_manifest_says_what_the_issue_asks() -> None:
    body = json.loads(
        Manifest(
            gid="9",
            organization_gid=ORG,
            organization_name="Acme",
            created_at=WHEN,
            size=12,
            sha256="ab" * 32,
            archived_at=WHEN,
            bot_version="1.2.3",
            file="2026-11-28-9.json.gz",
        ).to_json()
    )
    assert set(body) >= {"gid", "organization", "created_at", "size", "sha256", "archived_at"}
    assert body["bot_version"] == "1.2.3" and body["created_at"] == WHEN.isoformat()


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("file:///var/backups/asana", True),
        ("s3://bucket/prefix", True),
        ("gs://bucket", True),
        ("az://container/p", True),
        ("file://relative/dir", False),
        ("http://example.com/x", False),
        ("s3:///no-bucket", False),
        ("s3://key:secret@bucket/x", False),
        ("s3://bucket/x?X-Amz-Signature=1", False),
    ],
)
def test_archive_urls(url: str, ok: bool) -> None:
    assert (url_problem(url) is None) is ok


# -- retention --------------------------------------------------------------------------------


def test_retention_selects_the_oldest_of_our_own_names_with_their_manifests() -> None:
    paths = [
        f"{ORG}/2026-01-01-5.json.gz",
        f"{ORG}/2026-01-01-5.manifest.json",
        f"{ORG}/2026-02-01-3.zip",
        f"{ORG}/2026-03-01-1.json.gz",
        f"{ORG}/2026-03-01-2.json.gz",
        f"{ORG}/2026-03-01-2.manifest.json",
        f"{ORG}/2025-01-01-9.manifest.json",  # a manifest alone is left alone
        f"{ORG}/readme.txt",
        f"{ORG}/2020-01-01-1.json.gz#1",  # a local store's staging file
        "1100000000000999/2000-01-01-1.json.gz",  # another organization
    ]
    assert select_expired(paths, organization_gid=ORG, keep=2) == [
        f"{ORG}/2026-01-01-5.json.gz",
        f"{ORG}/2026-01-01-5.manifest.json",
        f"{ORG}/2026-02-01-3.zip",
    ]
    assert select_expired(paths, organization_gid=ORG, keep=10) == []
    assert len(select_expired(paths, organization_gid=ORG, keep=0)) == 6


_names = st.builds(
    lambda d, g, e: f"{ORG}/2026-{d:02d}-01-{g}{e}",
    st.integers(1, 12),
    st.integers(1, 10**6),
    st.sampled_from([".json.gz", ".zip", ""]),
)
_foreign = st.text(alphabet="abc-._#/0123456789", max_size=30).map(lambda s: f"{ORG}/{s}")


@given(st.lists(_names, unique=True), st.lists(_foreign), st.integers(0, 5))
def test_retention_never_selects_a_foreign_object_and_keeps_n(
    ours: list[str], foreign: list[str], keep: int
) -> None:
    foreign = [
        f for f in foreign if parse_archive_path(f) is None and not naming.is_manifest_path(f)
    ]
    chosen = select_expired(ours + foreign, organization_gid=ORG, keep=keep)
    assert not set(chosen) & set(foreign)
    kept = {parse_archive_path(p).stem for p in ours if p not in chosen}  # type: ignore[union-attr]
    assert len(kept) == min(keep, len({parse_archive_path(p).stem for p in ours}))  # type: ignore[union-attr]


# -- what a download answer means ------------------------------------------------------------


def test_answers_to_a_first_request() -> None:
    assert judge(200, {"content-length": "10"}, done=0, total=None) == resume.Verdict(
        Step.CONTINUE, total=10
    )
    assert judge(403, {}, done=0, total=None).step is Step.REFRESH_LINK
    assert judge(503, {}, done=0, total=None).step is Step.RESUME


def test_answers_to_a_resume() -> None:
    range_of = {"content-range": "bytes 100-199/200"}
    assert judge(206, range_of, done=100, total=200) == resume.Verdict(Step.CONTINUE, total=200)
    assert judge(206, range_of, done=50, total=200).step is Step.START_OVER
    assert judge(206, {"content-range": "bytes 100-199/300"}, done=100, total=200).step is (
        Step.START_OVER
    )
    assert judge(206, {}, done=100, total=200).step is Step.START_OVER
    assert judge(200, {"content-length": "200"}, done=100, total=200).step is Step.START_OVER
    assert judge(416, {}, done=100, total=200).step is Step.START_OVER
    assert judge(403, {}, done=100, total=200).step is Step.REFRESH_LINK
    assert judge(429, {}, done=100, total=200).step is Step.RESUME


def test_range_headers_and_validators() -> None:
    assert resume.range_headers(0, '"e"') == {"Accept-Encoding": "identity"}
    assert resume.range_headers(5, '"e"') == {
        "Accept-Encoding": "identity",
        "Range": "bytes=5-",
        "If-Range": '"e"',
    }
    assert resume.validator_of({"etag": '"e"', "last-modified": "d"}) == '"e"'
    assert resume.validator_of({"etag": 'W/"e"', "last-modified": "d"}) == "d"
    assert resume.validator_of({}) is None


def test_checksums_catch_a_mismatch() -> None:
    data = b"export bytes"
    sha, md5 = hashlib.sha256(data).digest(), hashlib.md5(data, usedforsecurity=False).digest()
    good = {"size": 12, "total": 12, "sha256": sha, "md5": md5}
    assert mismatch(**good, etag=f'"{md5.hex()}"', checksum_sha256=None) is None
    assert mismatch(**good, etag='"abc-2"', checksum_sha256=None) is None  # multipart: no MD5
    assert "MD5" in (mismatch(**good, etag='"' + "0" * 32 + '"', checksum_sha256=None) or "")
    b64 = base64.b64encode(sha).decode()
    assert mismatch(**good, etag=None, checksum_sha256=b64) is None
    other = base64.b64encode(hashlib.sha256(b"x").digest()).decode()
    assert "SHA-256" in (mismatch(**good, etag=None, checksum_sha256=other) or "")
    assert "11 bytes of 12" in (
        mismatch(**{**good, "size": 11}, etag=None, checksum_sha256=None) or ""
    )
    assert resume.wants_md5('"' + "a" * 32 + '"') and not resume.wants_md5('"a-3"')


def test_retry_delays_double_from_the_setting() -> None:
    assert [resume.retry_delay(n, 2.0) for n in (1, 2, 3, 10)] == [2.0, 4.0, 8.0, 60.0]
    assert resume.retry_delay(3, 0.0) == 0.0


def test_the_card_is_edited_at_most_every_ten_seconds() -> None:
    now = [100.0]
    throttle = EditThrottle(lambda: now[0])
    seen = []
    for step in (0, 3, 6, 9.9, 10.1, 15, 20.2, 50):
        now[0] = 100.0 + step
        seen.append(throttle.due())
    assert seen == [True, False, False, False, True, False, True, True]
