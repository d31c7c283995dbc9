"""Cleaning what a killed transfer left: S3 uploads in progress (moto server) and local staging
files; the SigV4 signing checked against botocore's own signer."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.archive.leftovers import (
    CleanupError,
    S3Settings,
    _parse_uploads,
    canonical_query,
    clean_leftovers,
    sign,
)
from bot.testing.moto_server import Bucket

MIB = 1024 * 1024


# ------------------------------------------------------------------------------ signing


def _botocore_headers(
    s3: S3Settings, method: str, url: str, query: dict[str, str]
) -> dict[str, str]:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method=method, url=url + "?" + canonical_query(query), data=b"")
    creds = Credentials(s3.access_key_id, s3.secret_access_key, s3.session_token)
    S3SigV4Auth(creds, "s3", s3.region).add_auth(request)
    return {k.lower(): v for k, v in request.headers.items()}


@pytest.mark.parametrize("token", [None, "session-token/with+odd=chars"])
@pytest.mark.parametrize(
    ("method", "path", "query"),
    [
        ("GET", "/archive-bucket/", {"uploads": "", "prefix": "backups/1100/2026-11-29-1.json.gz"}),
        ("GET", "/archive-bucket/", {"uploads": "", "prefix": "a b+c", "key-marker": "k~1"}),
        ("DELETE", "/archive-bucket/backups/1100/x%20y.gz", {"uploadId": "abc.DEF-_~+/="}),
    ],
)
def test_signature_is_the_one_botocore_computes(
    method: str, path: str, query: dict[str, str], token: str | None
) -> None:
    s3 = S3Settings(
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        token,
        "eu-west-3",
        "http://127.0.0.1:9000",
        virtual_hosted=False,
    )
    url = "http://127.0.0.1:9000" + path
    theirs = _botocore_headers(s3, method, url, query)
    when = datetime.strptime(theirs["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)

    ours = sign(s3, method, url, query, when)

    assert ours["authorization"] == theirs["authorization"]
    assert ours["x-amz-content-sha256"] == theirs["x-amz-content-sha256"]
    assert ours.get("x-amz-security-token") == theirs.get("x-amz-security-token")


def test_settings_come_from_the_variables_obstore_reads() -> None:
    assert S3Settings.from_env({"AWS_REGION": "eu-west-1"}) is None  # an instance role: no keys
    s3 = S3Settings.from_env(
        {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "eu-west-1"}
    )
    assert s3 is not None
    assert s3.bucket_url("b") == "https://s3.eu-west-1.amazonaws.com/b"
    hosted = S3Settings.from_env(
        {
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_ENDPOINT_URL": "https://minio.example:9000/",
            "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "true",
        }
    )
    assert hosted is not None and hosted.bucket_url("b") == "https://b.minio.example:9000"


def test_a_truncated_listing_gives_the_next_page_markers() -> None:
    page = b"""<?xml version="1.0" encoding="UTF-8"?>
    <ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
      <Bucket>b</Bucket><IsTruncated>true</IsTruncated>
      <NextKeyMarker>p/x.gz</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>
      <Upload><Key>p/x.gz</Key><UploadId>u1</UploadId></Upload>
      <Upload><Key>p/x.gz</Key><UploadId>u2</UploadId></Upload>
    </ListMultipartUploadsResult>"""
    found, markers = _parse_uploads(page)
    assert found == [("p/x.gz", "u1"), ("p/x.gz", "u2")]
    assert markers == {"key-marker": "p/x.gz", "upload-id-marker": "u2"}
    with pytest.raises(CleanupError):
        _parse_uploads(b"<html>oops")


# ------------------------------------------------------------------------------ S3 (moto)


async def test_aborts_only_the_uploads_of_that_very_key(s3_bucket: Bucket) -> None:
    key = "backups/1100/2026-11-29-1234.json.gz"
    s3_bucket.put("backups/1100/2026-11-28-1000.json.gz", b"an older archive")
    killed = [s3_bucket.start_upload(key, b"p" * (5 * MIB)) for _ in range(2)]
    longer = s3_bucket.start_upload(key + ".bak", b"q" * (5 * MIB))
    other = s3_bucket.start_upload("backups/1100/2026-11-29-9999.json.gz", b"r" * (5 * MIB))
    assert len(s3_bucket.uploads()) == 4

    removed = await clean_leftovers(
        s3_bucket.url("backups"), "1100/2026-11-29-1234.json.gz", env=s3_bucket.env()
    )

    assert removed == len(killed) == 2
    assert sorted(s3_bucket.uploads(), key=lambda u: u.key) == sorted(
        [longer, other], key=lambda u: u.key
    )
    assert s3_bucket.objects() == {"backups/1100/2026-11-28-1000.json.gz": 16}


async def test_nothing_to_clean_is_zero(s3_bucket: Bucket) -> None:
    assert await clean_leftovers(s3_bucket.url(), "1100/x.gz", env=s3_bucket.env()) == 0


async def test_without_static_keys_nothing_is_touched(s3_bucket: Bucket) -> None:
    upload = s3_bucket.start_upload("1100/x.gz", b"p" * (5 * MIB))
    env = {k: v for k, v in s3_bucket.env().items() if not k.startswith("AWS_SECRET")}

    assert await clean_leftovers(s3_bucket.url(), "1100/x.gz", env=env) == 0
    assert s3_bucket.uploads() == [upload]


async def test_a_store_that_refuses_is_a_cleanup_error(s3_bucket: Bucket) -> None:
    with pytest.raises(CleanupError, match="404: NoSuchBucket"):
        await clean_leftovers("s3://no-such-bucket-here/p", "1100/x.gz", env=s3_bucket.env())


# ------------------------------------------------------------------------------ local directory


async def test_removes_the_staging_files_of_that_name_only(tmp_path: Path) -> None:
    folder = tmp_path / "1100"
    folder.mkdir()
    name = "2026-11-29-1234.json.gz"
    for leftover in (f"{name}#1", f"{name}#12"):
        (folder / leftover).write_bytes(b"partial")
    for kept in (name, f"{name}#x", f"{name}.bak#1", "2026-11-29-9.json.gz#1", "notes.txt"):
        (folder / kept).write_bytes(b"keep")

    removed = await clean_leftovers(f"file://{tmp_path}", f"1100/{name}")

    assert removed == 2
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [name, f"{name}#x", f"{name}.bak#1", "2026-11-29-9.json.gz#1", "notes.txt"]
    )


async def test_a_missing_directory_has_nothing_to_clean(tmp_path: Path) -> None:
    assert await clean_leftovers(f"file://{tmp_path}", "1100/none.gz") == 0
    assert await clean_leftovers("gs://bucket/p", "1100/none.gz") == 0
