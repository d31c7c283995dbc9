"""Where an archive goes and what is written beside it: names, the manifest, retention (pure).

An export `1234` of organization `1100` created on 2026-11-29 is stored as::

    <prefix>/1100/2026-11-29-1234.json.gz            the file, bytes as Asana served them
    <prefix>/1100/2026-11-29-1234.manifest.json      gid, organization, created_at, size, ...

The extension is the one of the file Asana served (its Content-Disposition filename, else the
link's path), so the file keeps its own format and encoding. Retention only ever selects names of
this exact shape: anything else in the bucket (other tools' files, a person's notes, a local
store's in-progress `#` staging files) is never touched.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import Message as _HeaderParser
from typing import Any
from urllib.parse import unquote, urlsplit

#: The schemes ARCHIVE_URL may use.
SCHEMES = ("file", "s3", "gs", "az", "abfs", "abfss")

#: The manifest's suffix; no export file extension may be this.
MANIFEST_SUFFIX = ".manifest.json"

_GID = re.compile(r"^[0-9]{1,64}$")
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")
_ARCHIVE = re.compile(
    r"^(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})-(?P<gid>[0-9]{1,64})"
    r"(?P<ext>(?:\.[A-Za-z0-9]{1,10}){0,3})$"
)


def extension_of(content_disposition: str | None, url: str | None) -> str:
    """The file's extension, lower-cased: `.json.gz`, `.zip`, `.tar.gz`, or "" when unknown.

    From Content-Disposition's filename (RFC 6266, `filename*` included) first, then the last
    segment of the URL's path. At most three suffixes of letters and digits, so a hostile name
    can neither add a path segment nor become the manifest's suffix.
    """
    for name in (_disposition_filename(content_disposition), _url_filename(url)):
        if name:
            ext = _suffixes(name)
            if ext:
                return ext
    return ""


def _disposition_filename(value: str | None) -> str | None:
    if not value:
        return None
    parser = _HeaderParser()
    parser["content-disposition"] = value
    try:
        name = parser.get_filename()
    except (ValueError, LookupError):
        return None
    return name.replace("\\", "/").rsplit("/", 1)[-1] if name else None


def _url_filename(url: str | None) -> str | None:
    if not url:
        return None
    return unquote(urlsplit(url).path).rsplit("/", 1)[-1] or None


def _suffixes(name: str) -> str:
    parts = name.split(".")[1:][-3:]
    kept: list[str] = []
    for part in reversed(parts):  # the last suffixes are the meaningful ones (.json.gz)
        if not _SUFFIX.match("." + part):
            break
        kept.insert(0, "." + part.lower())
    ext = "".join(kept)
    return "" if ext.endswith(MANIFEST_SUFFIX) else ext


@dataclass(frozen=True, slots=True)
class ArchiveName:
    """One archive's place: its file and its manifest, relative to the store's root."""

    organization_gid: str
    date: str  # YYYY-MM-DD of the export's created_at (UTC)
    export_gid: str
    extension: str

    @property
    def stem(self) -> str:
        return f"{self.organization_gid}/{self.date}-{self.export_gid}"

    @property
    def path(self) -> str:
        return self.stem + self.extension

    @property
    def manifest_path(self) -> str:
        return self.stem + MANIFEST_SUFFIX


def archive_name(
    organization_gid: str | None, created_at: datetime | None, export_gid: str, extension: str
) -> ArchiveName:
    """The name of an export's archive; ValueError when a part would not make a safe name.

    An export without an organization (Asana leaves it out now and then) is filed under `0`;
    one without created_at under the date 0000-00-00, so it is still found and never clashes.
    """
    if not _GID.match(export_gid):
        raise ValueError("export gid must be digits")
    org = organization_gid or "0"
    if not _GID.match(org):
        raise ValueError("organization gid must be digits")
    if extension and (
        extension.endswith(MANIFEST_SUFFIX) or _suffixes("x" + extension) != extension
    ):
        raise ValueError(f"not a file extension: {extension!r}")
    date = created_at.date().isoformat() if created_at is not None else "0000-00-00"
    return ArchiveName(org, date, export_gid, extension)


def parse_archive_path(path: str) -> ArchiveName | None:
    """The archive an object path names, or None when it is not one of ours (or a manifest)."""
    org, _, leaf = path.rpartition("/")
    org = org.rsplit("/", 1)[-1]
    if not _GID.match(org) or leaf.endswith(MANIFEST_SUFFIX):
        return None
    match = _ARCHIVE.match(leaf)
    if match is None:
        return None
    return ArchiveName(org, match["date"], match["gid"], match["ext"].lower())


def is_manifest_path(path: str) -> bool:
    """True for a manifest of ours: `<org>/<date>-<gid>.manifest.json`."""
    org, _, leaf = path.rpartition("/")
    if not _GID.match(org.rsplit("/", 1)[-1]) or not leaf.endswith(MANIFEST_SUFFIX):
        return False
    return _ARCHIVE.match(leaf.removesuffix(MANIFEST_SUFFIX)) is not None


@dataclass(frozen=True, slots=True)
class Manifest:
    """What is written beside an archive, as JSON: enough to check the file years later."""

    gid: str
    organization_gid: str | None
    organization_name: str | None
    created_at: datetime | None
    size: int
    sha256: str
    archived_at: datetime
    bot_version: str
    file: str  # the archive's file name beside the manifest

    def to_json(self) -> bytes:
        body: dict[str, Any] = {
            "gid": self.gid,
            "organization": {"gid": self.organization_gid, "name": self.organization_name},
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "size": self.size,
            "sha256": self.sha256,
            "archived_at": self.archived_at.isoformat(),
            "bot_version": self.bot_version,
            "file": self.file,
        }
        return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()


def select_expired(paths: list[str], *, organization_gid: str, keep: int) -> list[str]:
    """The objects to delete so that only the newest `keep` archives of the organization remain.

    `paths` are object paths under the organization's folder (anything else is ignored). Only
    archives of our naming scheme count and are selected, each with its manifest when there is
    one; newest means latest created date, then highest gid. A manifest whose archive is gone
    is left alone (it may be mid-write by another replica).
    """
    if keep < 0:
        raise ValueError("keep must be >= 0")
    archives: dict[str, list[tuple[ArchiveName, str]]] = {}
    manifests: dict[str, str] = {}
    for path in paths:
        name = parse_archive_path(path)
        if name is not None and name.organization_gid == organization_gid:
            archives.setdefault(name.stem, []).append((name, path))
        elif is_manifest_path(path):
            stem = path.removesuffix(MANIFEST_SUFFIX)
            if stem.rsplit("/", 2)[-2] == organization_gid:
                manifests[stem.rsplit("/", 2)[-2] + "/" + stem.rsplit("/", 1)[-1]] = path
    order = sorted(
        archives, key=lambda s: (archives[s][0][0].date, int(archives[s][0][0].export_gid))
    )
    expired = order[: max(0, len(order) - keep)]
    selected: list[str] = []
    for stem in expired:
        selected += sorted(path for _, path in archives[stem])
        if stem in manifests:
            selected.append(manifests[stem])
    return selected


def url_problem(url: str) -> str | None:
    """Why ARCHIVE_URL cannot be used, or None (pure: nothing is contacted)."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        return f"its scheme must be one of {', '.join(s + '://' for s in SCHEMES)}"
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            return "a file URL needs an absolute path: file:///var/backups/asana"
    elif not parts.netloc:
        return "an object store URL needs a bucket or container: s3://bucket/prefix"
    if parts.query or parts.fragment or parts.password:
        return "it must not carry a query, a fragment or credentials (use the AWS_* variables)"
    return None
