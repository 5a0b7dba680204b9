"""What an SQLite error says, by its `sqlite_errorname`: a lock, an unusable file, a damaged one."""

from __future__ import annotations

import sqlite3

# SQLite's answers (`sqlite_errorname` prefixes) that say the file cannot be used now, not
# that a statement or the file is wrong: another connection's lock (held past busy_timeout),
# or a file that cannot be opened, read or written (I/O, permissions, a full disk).
BUSY_ERRORS = ("SQLITE_BUSY", "SQLITE_LOCKED")
# And those that say the file itself is damaged, or no database.
CORRUPT_ERRORS = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
UNAVAILABLE_ERRORS = (
    *BUSY_ERRORS,
    "SQLITE_CANTOPEN",
    "SQLITE_IOERR",
    "SQLITE_READONLY",
    "SQLITE_FULL",
    "SQLITE_PERM",
    "SQLITE_AUTH",
)


def sqlite_error_name(err: sqlite3.Error) -> str:
    """SQLite's name for `err` (`SQLITE_BUSY`, `SQLITE_CONSTRAINT_UNIQUE`, …); "" when it has
    none (an error not raised by SQLite itself)."""
    name: str = getattr(err, "sqlite_errorname", "")
    return name


def is_busy(err: sqlite3.Error) -> bool:
    """Whether SQLite refused for another connection's lock (so nothing was written)."""
    return sqlite_error_name(err).startswith(BUSY_ERRORS)


def locked_for_too_long(err: sqlite3.Error, busy_timeout: float) -> str:
    return f"{err} for longer than busy_timeout={busy_timeout}s"


def unavailable_detail(err: sqlite3.Error, busy_timeout: float) -> str | None:
    """What to say when `err` means the file cannot be used now (a lock held past
    `busy_timeout`, a file that cannot be opened, read or written), else None."""
    if is_busy(err):
        return locked_for_too_long(err, busy_timeout)
    if sqlite_error_name(err).startswith(UNAVAILABLE_ERRORS):
        return str(err)
    return None


def reads_as_damaged(err: sqlite3.Error) -> bool:
    """Whether `err` says a store's file is damaged, or not the store's at all (a table or
    column every such file has is missing)."""
    name = sqlite_error_name(err)
    return name.startswith(CORRUPT_ERRORS) or str(err).startswith(
        ("no such table", "no such column")
    )
