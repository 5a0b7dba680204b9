"""SQLite files as every SQLite backend opens them: checked before use, then put in WAL mode.

Shared by the SQLite journal, memory and budget ledger, which must not import one another;
each turns `SqliteFileProblem` into its own typed error.

The checks read the database file, its `-wal` and its `-shm` directly, which is only safe
while this process has none of them open through SQLite: a file this process has open is not
read directly again, and no connection opened through loomgraph (`GuardedConnection`) opens
while a check reads a file (see `sqlite_held`).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Literal

import aiosqlite

from loomgraph._storage.sqlite_errors import (
    CORRUPT_ERRORS,
    is_busy,
    locked_for_too_long,
    sqlite_error_name,
)
from loomgraph._storage.sqlite_held import GuardedConnection, direct_reads
from loomgraph._storage.sqlite_setup import connect_sqlite, set_busy_timeout
from loomgraph._storage.sqlite_wal_loss import WalLoss, read_lost_wal_frames
from loomgraph.errors import LoomgraphError

__all__ = [
    "SqliteFileProblem",
    "check_sqlite_file",
    "enable_wal",
    "integrity_of",
    "open_sqlite",
    "sqlite_problem",
]

_HEADER = b"SQLite format 3\x00"


class SqliteFileProblem(LoomgraphError):
    """A file that cannot be opened as an SQLite database, and whether it is damaged."""

    def __init__(
        self, kind: Literal["unavailable", "corrupted"], message: str, integrity: str = ""
    ) -> None:
        super().__init__(message)
        self.kind = kind
        # What `PRAGMA quick_check` said of the file (or why it could not run); "" if unasked.
        self.integrity = integrity
        self.loss: WalLoss | None = None  # set when committed WAL frames are what is missing


def integrity_of(path: str, *, immutable: bool = False, busy_timeout: float | None = None) -> str:
    """`PRAGMA quick_check` of a file, on a read-only connection: "ok", the problems found,
    or the error that kept it from running. Never writes the database file; a read-only
    connection may create an empty `-wal`/`-shm` beside it. `immutable` reads the main file
    alone (ignoring `-wal`/`-shm`) and creates nothing.

    With `busy_timeout`, another connection's lock is waited for that long, and one held
    longer raises SqliteFileProblem("unavailable"): a locked file is not a damaged one.
    """
    uri = Path(path).absolute().as_uri() + ("?immutable=1" if immutable else "?mode=ro")
    try:
        conn = sqlite3.connect(
            uri,
            uri=True,
            timeout=5.0 if busy_timeout is None else busy_timeout,
            factory=GuardedConnection,
        )
    except sqlite3.Error as err:
        return f"cannot open: {err}"
    try:
        rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check(5)")]
        return "; ".join(rows).replace("\n", "; ")
    except sqlite3.Error as err:
        if busy_timeout is not None and is_busy(err):
            raise SqliteFileProblem("unavailable", locked_for_too_long(err, busy_timeout)) from None
        return f"quick_check failed: {err}"
    finally:
        conn.close()


def check_sqlite_file(path: str) -> None:
    """Refuse a file that is not an intact SQLite database before anything writes to it.

    A file this process has open already is not read again: it was checked when first
    opened, and reading it would drop this process's locks (see `sqlite_held`)."""
    with direct_reads(path) as safe:
        if safe:
            _check_sqlite_file(path)


def _check_sqlite_file(path: str) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except FileNotFoundError:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise SqliteFileProblem("unavailable", f"directory {parent!r} does not exist") from None
        return  # a new file
    except OSError as err:
        raise SqliteFileProblem("unavailable", err.strerror or str(err)) from None
    if head and not head.startswith(_HEADER):
        raise SqliteFileProblem(
            "corrupted", "not an SQLite database (no SQLite header)", "not a database"
        )
    if 0 < len(head) < 100:
        raise SqliteFileProblem(
            "corrupted", f"truncated to {len(head)} bytes", integrity_of(path, immutable=True)
        )
    if head:
        # SQLite writes whole pages only; a partial last page means a cut-off file.
        page = int.from_bytes(head[16:18], "big")
        page = 65536 if page == 1 else page
        size = os.path.getsize(path)
        if page and size % page:
            raise SqliteFileProblem(
                "corrupted",
                f"truncated: {size} bytes is not a whole number of {page}-byte pages",
                integrity_of(path, immutable=True),
            )


async def enable_wal(conn: aiosqlite.Connection, busy_timeout: float) -> None:
    """Switch a file to WAL mode (the mode then stays with the file).

    The switch upgrades a read transaction to a write one, which SQLite never waits for
    (busy_timeout does not apply), so connections opening one new file together retry here,
    within `busy_timeout`. Each statement's rows are read to the end (see `execute_all`).
    """
    loop = asyncio.get_running_loop()
    deadline, delay = loop.time() + busy_timeout, 0.001
    statement = "PRAGMA journal_mode"  # first only look: the file may be WAL already
    while True:
        try:
            mode = str(next(iter(await conn.execute_fetchall(statement)))[0])
        except sqlite3.OperationalError as err:
            if not is_busy(err) or loop.time() > deadline:
                raise
            await asyncio.sleep(delay)  # another process holds the lock for a moment
            delay = min(delay * 2, 0.05)
            continue
        if mode.lower() == "wal":
            return
        if statement.endswith("WAL"):
            raise SqliteFileProblem("unavailable", f"cannot switch to WAL mode ({mode})")
        statement = "PRAGMA journal_mode = WAL"


def sqlite_problem(path: str, err: sqlite3.Error, busy_timeout: float) -> SqliteFileProblem:
    """An SQLite error met while opening `path`, as a SqliteFileProblem naming the file."""
    text = locked_for_too_long(err, busy_timeout) if is_busy(err) else str(err)
    if sqlite_error_name(err).startswith(CORRUPT_ERRORS):
        return SqliteFileProblem("corrupted", f"{path}: {text}", text)
    return SqliteFileProblem("unavailable", f"{path}: {text}")


async def open_sqlite(
    path: str, *, busy_timeout: float, verify: bool, accept_lost_wal: bool = False
) -> aiosqlite.Connection:
    """A connection to a checked file: refused before anything is written when the file is not
    an intact database, or its `-wal` lost committed frames (unless `accept_lost_wal`);
    `verify` adds `PRAGMA quick_check` on a read-only connection first (which never
    checkpoints into the file). Then a busy timeout and WAL mode.

    Raises SqliteFileProblem; other sqlite3 errors are left to the caller to translate.
    """
    in_memory = path == ":memory:"
    if not in_memory:
        with direct_reads(path) as safe:  # both checks under one look at the descriptors
            if safe:
                _check_sqlite_file(path)
            loss = read_lost_wal_frames(path) if safe else None
        if loss is not None and (loss.foreign or not accept_lost_wal):
            problem = SqliteFileProblem(
                "corrupted", loss.detail, integrity_of(path, immutable=True)
            )
            problem.loss = loss
            raise problem
        if verify and os.path.exists(path):
            result = await asyncio.to_thread(integrity_of, path, busy_timeout=busy_timeout)
            if result != "ok":
                raise SqliteFileProblem("corrupted", f"quick_check: {result}", result)
    try:
        conn = await connect_sqlite(path)
    except sqlite3.Error as err:
        raise SqliteFileProblem("unavailable", str(err)) from None
    try:
        await set_busy_timeout(conn, busy_timeout)
        if not in_memory:
            await enable_wal(conn, busy_timeout)
    except sqlite3.DatabaseError as err:
        await conn.close()
        if sqlite_error_name(err) in CORRUPT_ERRORS:
            raise SqliteFileProblem("corrupted", str(err), str(err)) from None
        raise
    except BaseException:
        await conn.close()
        raise
    return conn
