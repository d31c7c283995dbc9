"""Archive: a generated gzip export (1 GiB at full size) from the fake Asana to a local directory
and to S3 (moto's server), against a plain streaming httpx download to a local file.

Each transfer runs alone in a `bench.archive_worker` subprocess, so its time and its memory are
its own: the fake Asana is a thread of this process and moto a process of its own. Throughput
is bytes over the transfer's wall time; memory is the worker's high-water mark (VmHWM) minus
its resident set just before the transfer. Rounds run baseline, local, S3 and the plain pipe to S3, each round starting with the next.

moto keeps every object in its own process and takes parts at a few tens of MB/s on a small
machine, so the S3 ratio measures moto as much as us; its note gives moto's own intake (one
obstore put of the same number of bytes from memory, no download) to read it against.

The served file's ETag is its MD5, as S3 gives for an object uploaded in one part, so ours also
computes MD5 to compare with it; the baseline does not. A second export serves the same bytes
without that ETag (as a multipart object's): ours to a local directory again, a row without a
target that shows the path without the MD5 check, and the note gives each hash's CPU per GiB.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from bench.common import (
    ASANA_TOKEN,
    Context,
    Row,
    Section,
    Target,
    child_env,
    median,
    python_module,
    run_json,
)

NAME = "archive"
GID = "1200000000000042"
#: The same bytes served without an MD5 ETag (a multipart object's): no MD5 to compute.
GID_NO_MD5 = "1200000000000043"
MIB = 1024 * 1024
RSS_LIMIT_MIB = 64
THROUGHPUT_RATIO = 0.8


def _worker(
    mode: str, asana: Any, dest: str, env: dict[str, str], gid: str = GID
) -> dict[str, Any]:
    args = (mode, asana.base_url, ASANA_TOKEN, gid, dest)
    return run_json(python_module("bench.archive_worker", *args), timeout=900, env=child_env(env))


def _moto_intake(size: int, env: dict[str, str], url: str) -> float:
    """MiB/s moto takes one streamed put of `size` bytes from memory (no download)."""
    result = run_json(
        python_module("bench.archive_worker", "intake", str(size), "-", "-", url),
        timeout=900,
        env=child_env(env),
    )
    return size / MIB / float(result["seconds"])


def run(ctx: Context) -> Section:
    from bot.demo.fake_asana import FakeAsana
    from bot.testing.moto_server import MotoS3

    size = ctx.pick(smoke=8 * MIB, full=1024 * MIB)
    rounds = ctx.pick(smoke=1, full=3)
    workdir = ctx.subdir("archive")
    order = ["baseline", "local", "local_no_md5", "s3", "pipe"]
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in order}
    with FakeAsana(token=ASANA_TOKEN) as asana, MotoS3(log_path=workdir / "moto.log") as moto:
        for gid in (GID, GID_NO_MD5):
            asana.set_export(gid, "finished", organization_name="Acme Benchmarks")
        served = asana.serve_file(GID, size)
        asana.serve_file(GID_NO_MD5, size, etag=False)
        ctx.log(f"archive: {size // MIB} MiB file, sha256 {served.sha256[:12]}...")
        served.md5  # noqa: B018 - the fake's ETag, computed once before any transfer is timed
        bucket = moto.new_bucket()
        env = moto.env()
        for i in range(rounds):
            # Each round starts with a different one, so drift and neighbours' load spread out.
            start = i % len(order)
            for mode in order[start:] + order[:start]:
                ctx.log(f"archive: round {i + 1}/{rounds}, {mode}")
                results[mode].append(_one(mode, i, asana, workdir, bucket.url(f"round-{i}"), env))
        intake = None
        if ctx.size == "full":  # one more process start is most of a smoke run's cost
            ctx.log("archive: moto's own intake")
            intake = _moto_intake(size, env, bucket.url("intake"))
    for name, runs in results.items():
        for r in runs:
            if r["bytes"] != size or r["sha256"] not in (served.sha256, ""):
                raise RuntimeError(f"{name}: {r['bytes']} bytes, sha256 {r['sha256'][:12]}...")
    return _section(size, results, intake, _hash_seconds_per_gib())


def _hash_seconds_per_gib(sample: int = 64 * MIB) -> dict[str, float]:
    """CPU seconds per GiB of each digest an archive may compute, on this machine (hashlib)."""
    piece = bytes(range(256)) * (MIB // 256)
    seconds = {}
    for name in ("sha256", "md5"):
        digest = hashlib.new(name)
        started = time.thread_time()
        for _ in range(sample // MIB):
            digest.update(piece)
        seconds[name] = (time.thread_time() - started) * (1024 * MIB) / sample
    return seconds


def _one(
    mode: str, i: int, asana: Any, workdir: Path, s3_url: str, env: dict[str, str]
) -> dict[str, Any]:
    """One timed transfer; what it wrote on local disk is removed (the next has the room)."""
    if mode == "baseline":
        target = workdir / f"baseline-{i}.json.gz"
        result = _worker("baseline", asana, str(target), env)
        target.unlink()
        return result
    if mode in ("local", "local_no_md5"):
        local = workdir / f"{mode}-{i}"
        gid = GID if mode == "local" else GID_NO_MD5
        result = _worker("ours", asana, f"file://{local}", env, gid)
        _remove_tree(local)
        return result
    if mode == "pipe":
        return _worker("pipe", asana, s3_url + "-pipe", env)
    return _worker("ours", asana, s3_url, env)


def _remove_tree(path: Path) -> None:
    for child in sorted(path.rglob("*"), reverse=True):
        child.unlink() if child.is_file() else child.rmdir()
    if path.exists():
        path.rmdir()


def _mb_s(runs: list[dict[str, Any]]) -> float:
    return median([r["bytes"] / MIB / r["seconds"] for r in runs])


def _growth(runs: list[dict[str, Any]]) -> float:
    return max(r["rss_peak_mb"] - r["rss_before_mb"] for r in runs)


def _section(
    size: int,
    results: dict[str, list[dict[str, Any]]],
    intake: float | None,
    hashing: dict[str, float],
) -> Section:
    base_speed, base_growth = _mb_s(results["baseline"]), _growth(results["baseline"])
    rows = []
    for key, label in (("local", "to a local directory"), ("s3", "to S3 (moto)")):
        rows.append(
            Row(
                NAME,
                f"{size // MIB} MiB {label}: throughput",
                _mb_s(results[key]),
                "MiB/s",
                baseline=base_speed,
                target=Target(THROUGHPUT_RATIO, better="higher"),
            )
        )
        rows.append(
            Row(
                NAME,
                f"{size // MIB} MiB {label}: peak RSS growth",
                _growth(results[key]),
                "MiB",
                baseline=base_growth,
                target=Target(RSS_LIMIT_MIB, on="value", better="lower"),
            )
        )
    rows.insert(
        2,
        Row(
            NAME,
            f"{size // MIB} MiB to a local directory, no MD5 ETag (a multipart object's): "
            "throughput",
            _mb_s(results["local_no_md5"]),
            "MiB/s",
            baseline=base_speed,
        ),
    )
    rows.append(
        Row(
            NAME,
            f"{size // MIB} MiB to S3 (moto): throughput vs a plain httpx -> boto3 pipe",
            _mb_s(results["s3"]),
            "MiB/s",
            baseline=_mb_s(results["pipe"]),
            target=Target(THROUGHPUT_RATIO, better="higher"),
        )
    )
    notes = [
        "Baseline: a plain streaming httpx download of the same link to a local file, in a "
        "worker process like ours, in the same run (median of the rounds). The last row's "
        "baseline is the plain tools' way to the same S3: that download piped into boto3's "
        "multipart upload_fileobj with our part size and concurrency.",
        (
            f"moto's own intake on this machine: {intake:,.0f} MiB/s for one streamed obstore "
            "put of the same size from memory (no download): the ceiling of the S3 rows."
            if intake is not None
            else "moto's own intake: measured at full size only."
        ),
        "Peak RSS growth: the worker's VmHWM after the transfer minus its VmRSS just before it "
        f"(worst of the rounds). Target: under {RSS_LIMIT_MIB} MiB for any size.",
        "The MD5 check: the served file's ETag is its MD5 (S3, one part), so ours computes MD5 "
        "beside SHA-256 (each in a worker thread) and compares; the baseline hashes SHA-256 "
        f"only. CPU per GiB on this machine (hashlib): SHA-256 {hashing['sha256']:.2f} s, MD5 "
        f"{hashing['md5']:.2f} s. The fake Asana serving the file runs on the same 2 cores. "
        "The row without an MD5 ETag is the same path without that check.",
    ]
    return Section(NAME, rows=rows, notes=notes)
