"""moto's S3 in server mode on 127.0.0.1: the object store that archive tests and benchmarks use.

A subprocess, not a thread of the test: a 1 GiB upload keeps moto busy, and in its own process it
neither holds the test's GIL nor grows the test's memory. The bot reaches it as it would reach
S3 or any S3-compatible store, through the standard `AWS_*` variables (`env()`); the test looks at
the bucket with boto3 (imported only when used: it is a dev dependency that moto brings).
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.testing.process import free_port

#: Fake credentials: moto accepts any, and real ones must never reach a test.
ACCESS_KEY_ID = "moto-testing-key-id"
SECRET_ACCESS_KEY = "moto-testing-secret-key"
REGION = "us-east-1"


@dataclass(frozen=True)
class Upload:
    """A multipart upload S3 still holds open (started, neither completed nor aborted)."""

    key: str
    upload_id: str


class MotoS3:
    """`python -m moto.server` on a free port of 127.0.0.1, stopped on exit."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point an S3 client (obstore, boto3) at this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    # ---------------------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 30.0) -> MotoS3:
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        finally:
            if self.log_path:
                out.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited {self._proc.returncode}")
            if time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(f"moto server not answering within {timeout}s")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=0.5)
        try:
            conn.request("GET", "/moto-api/data.json")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---------------------------------------------------------------------------- the bucket

    @property
    def client(self) -> Any:
        """A boto3 S3 client on this server (created on first use)."""
        if self._client is None:
            import boto3

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=REGION,
                aws_access_key_id=ACCESS_KEY_ID,
                aws_secret_access_key=SECRET_ACCESS_KEY,
            )
        return self._client

    def create_bucket(self, name: str) -> str:
        self.client.create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Every object under `prefix`: key -> size in bytes."""
        found: dict[str, int] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            for item in page.get("Contents", []):
                found[item["Key"]] = int(item["Size"])
        return found

    def read(self, bucket: str, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())

    def put(self, bucket: str, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=body)

    def uploads(self, bucket: str, prefix: str = "") -> list[Upload]:
        """Multipart uploads still in progress (ListMultipartUploads): what a crash leaves."""
        answer = self.client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
        return [Upload(u["Key"], u["UploadId"]) for u in answer.get("Uploads", [])]

    def start_upload(self, bucket: str, key: str, part: bytes) -> Upload:
        """Begin a multipart upload and send one part, as a replica killed mid-upload leaves it."""
        upload_id = self.client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        self.client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=part)
        return Upload(key, upload_id)

    def new_bucket(self, name: str | None = None) -> Bucket:
        """A fresh empty bucket (a random name unless given): one per test on a shared server."""
        return Bucket(self, self.create_bucket(name or f"archive-{uuid.uuid4().hex[:16]}"))


@dataclass(frozen=True)
class Bucket:
    """One bucket of a MotoS3 server, as a test sees it."""

    server: MotoS3
    name: str

    def url(self, prefix: str = "") -> str:
        """The ARCHIVE_URL of `prefix` in this bucket: `s3://name/prefix`."""
        return f"s3://{self.name}/{prefix}".rstrip("/")

    def env(self) -> dict[str, str]:
        return self.server.env()

    def objects(self, prefix: str = "") -> dict[str, int]:
        return self.server.objects(self.name, prefix)

    def read(self, key: str) -> bytes:
        return self.server.read(self.name, key)

    def put(self, key: str, body: bytes) -> None:
        self.server.put(self.name, key, body)

    def uploads(self, prefix: str = "") -> list[Upload]:
        return self.server.uploads(self.name, prefix)

    def start_upload(self, key: str, part: bytes) -> Upload:
        return self.server.start_upload(self.name, key, part)
