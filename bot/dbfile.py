"""The SQLite file itself: created owner-only, checked to be SQLite, and watched for deletion.

SQLite keeps using the inode it opened, so a file deleted (or replaced by a restore) under a
running bot fails nothing by itself: writes go on into a file nobody will read again, and a new
connection would silently create an empty one. So the engine remembers the file's identity
(st_dev, st_ino) once it exists, and every new connection and every transaction compares it with
what the path holds now (one stat(2), microseconds); a mismatch raises DatabaseUnavailable until
an operator restarts the bot. PostgreSQL needs none of this.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: The first 16 bytes of every SQLite 3 database file (https://sqlite.org/fileformat.html).
SQLITE_HEADER = b"SQLite format 3\x00"
#: New files are readable and writable by their owner only; SQLite gives -wal/-shm the same mode.
OWNER_ONLY = 0o600

#: What /readyz and the log say; the path stays in the log (the readiness check is public).
GONE = "database file is gone (deleted or replaced while the bot was running); restart the bot"


class DatabaseFileError(Exception):
    """DATABASE_URL names something that cannot be a SQLite database: start-up must stop."""


class DatabaseUnavailable(Exception):
    """The database cannot be used until an operator acts; `reason` is safe to show anyone."""

    def __init__(self, detail: str, reason: str = GONE) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SqliteFile:
    """The file the engine opened, by identity, so a different file at the path is noticed."""

    path: Path
    device: int
    inode: int

    def check(self) -> None:
        """Raise DatabaseUnavailable when the path no longer holds the file the bot opened."""
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            raise DatabaseUnavailable(f"{GONE}: {self.path} no longer exists") from None
        except OSError as exc:
            raise DatabaseUnavailable(f"{GONE}: {self.path}: {exc.strerror}") from None
        if (now.st_dev, now.st_ino) != (self.device, self.inode):
            raise DatabaseUnavailable(f"{GONE}: {self.path} is another file now")


def prepare(path: Path) -> SqliteFile:
    """Make sure `path` is a usable SQLite file before the first connection, creating it 0600.

    A missing file is created empty (SQLite initialises an empty file) with mode 0600 whatever
    the umask; an existing file keeps its mode. Raises DatabaseFileError, naming DATABASE_URL,
    for anything that cannot be a SQLite database.
    """
    path = path.expanduser().absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _create_owner_only(path)
        info = os.stat(path)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
        raise _problem(path, f"cannot be created or opened: {exc.strerror}{where}") from None
    if stat.S_ISDIR(info.st_mode):
        raise _problem(path, "is a directory, not a SQLite database file")
    if not stat.S_ISREG(info.st_mode):
        raise _problem(path, "is not a SQLite database: it is not a regular file")
    if not os.access(path, os.R_OK | os.W_OK):
        raise _problem(path, "cannot be read and written by this user")
    if info.st_size:
        try:
            with path.open("rb") as file:
                header = file.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise _problem(path, f"cannot be read: {exc.strerror}") from None
        if header != SQLITE_HEADER:
            raise _problem(path, "is not a SQLite database: it does not start with SQLite's header")
    return SqliteFile(path, info.st_dev, info.st_ino)


def warn_if_readable_by_others(path: Path) -> None:
    """An operator's own file keeps its mode (a backup group may need it), with a warning."""
    with contextlib.suppress(OSError):
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            log.warning(
                "SQLite file %s may be read by others (mode %04o); it is left as it is: "
                "chmod 600 it unless that is intended",
                path,
                mode,
            )


def _create_owner_only(path: Path) -> None:
    """Create an empty file with mode 0600 unless something is there already (fchmod, because
    the umask could take bits away; SQLite copies this mode to the -wal and -shm files)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, OWNER_ONLY)
    finally:
        os.close(fd)


def _problem(path: Path, what: str) -> DatabaseFileError:
    return DatabaseFileError(
        f"DATABASE_URL names {path}, which {what}. Point DATABASE_URL at a SQLite file"
        " (a missing one is created) or at a PostgreSQL database."
    )
