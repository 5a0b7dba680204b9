"""SQLite files as every SQLite backend opens them: checked before use, then put in WAL mode.

Shared by the SQLite journal, memory and budget ledger, which must not import one another;
each turns `SqliteFileProblem` into its own typed error.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterable
from typing import Literal

import aiosqlite

from loomgraph.errors import LoomgraphError

_HEADER = b"SQLite format 3\x00"


class SqliteFileProblem(LoomgraphError):
    """A file that cannot be opened as an SQLite database, and whether it is damaged."""

    def __init__(self, kind: Literal["unavailable", "corrupted"], message: str) -> None:
        super().__init__(message)
        self.kind = kind


def check_sqlite_file(path: str) -> None:
    """Refuse a file that is not an intact SQLite database before anything writes to it."""
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
        raise SqliteFileProblem("corrupted", "not an SQLite database (no SQLite header)")
    if 0 < len(head) < 100:
        raise SqliteFileProblem("corrupted", f"truncated to {len(head)} bytes")
    if head:
        # SQLite writes whole pages only; a partial last page means a cut-off file.
        page = int.from_bytes(head[16:18], "big")
        page = 65536 if page == 1 else page
        size = os.path.getsize(path)
        if page and size % page:
            raise SqliteFileProblem(
                "corrupted", f"truncated: {size} bytes is not a whole number of {page}-byte pages"
            )


async def enable_wal(conn: aiosqlite.Connection, busy_timeout: float) -> None:
    """Switch a file to WAL mode (the mode then stays with the file).

    The switch needs an exclusive lock and SQLite applies no busy_timeout to it, so processes
    opening one new file together retry here, within `busy_timeout`.
    """
    loop = asyncio.get_running_loop()
    deadline, delay = loop.time() + busy_timeout, 0.001
    statement = "PRAGMA journal_mode"  # first only look: the file may be WAL already
    while True:
        try:
            mode = str(next(iter(await conn.execute_fetchall(statement)))[0])
        except sqlite3.OperationalError as err:
            busy = getattr(err, "sqlite_errorname", "").startswith("SQLITE_BUSY")
            if not busy or loop.time() > deadline:
                raise
            await asyncio.sleep(delay)  # another process holds the lock for a moment
            delay = min(delay * 2, 0.05)
            continue
        if mode.lower() == "wal":
            return
        if statement.endswith("WAL"):
            raise SqliteFileProblem("unavailable", f"cannot switch to WAL mode ({mode})")
        statement = "PRAGMA journal_mode = WAL"


_CORRUPT = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


async def connect_sqlite(path: str) -> aiosqlite.Connection:
    """A connection in autocommit mode (transactions are begun explicitly)."""
    conn = aiosqlite.connect(path, isolation_level=None)
    # aiosqlite's worker thread is not a daemon: an unclosed store would keep the process
    # from exiting. Every write is committed when it returns, so nothing is lost.
    thread = getattr(conn, "_thread", None)
    if thread is not None:
        thread.daemon = True
    await conn
    return conn


async def execute_all(conn: aiosqlite.Connection, statements: Iterable[str]) -> None:
    """Run statements (tables, indexes) in one write transaction."""
    await conn.execute("BEGIN IMMEDIATE")
    for statement in statements:
        await conn.execute(statement)
    await conn.execute("COMMIT")


async def set_busy_timeout(conn: aiosqlite.Connection, busy_timeout: float) -> None:
    """Wait up to `busy_timeout` seconds for another process's lock instead of failing."""
    await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")


async def open_sqlite(path: str, *, busy_timeout: float, verify: bool) -> aiosqlite.Connection:
    """A connection to a checked file: refused before anything is written when the file is not
    an intact database (`verify` adds `PRAGMA quick_check`), with a busy timeout, in WAL mode.

    Raises SqliteFileProblem; other sqlite3 errors are left to the caller to translate.
    """
    in_memory = path == ":memory:"
    if not in_memory:
        check_sqlite_file(path)
    try:
        conn = await connect_sqlite(path)
    except sqlite3.Error as err:
        raise SqliteFileProblem("unavailable", str(err)) from None
    try:
        await set_busy_timeout(conn, busy_timeout)
        if verify and not in_memory:
            rows = [str(r[0]) for r in await conn.execute_fetchall("PRAGMA quick_check(5)")]
            if rows != ["ok"]:
                raise SqliteFileProblem("corrupted", "; ".join(rows).replace("\n", "; "))
        if not in_memory:
            await enable_wal(conn, busy_timeout)
    except sqlite3.DatabaseError as err:
        await conn.close()
        if getattr(err, "sqlite_errorname", "") in _CORRUPT:
            raise SqliteFileProblem("corrupted", str(err)) from None
        raise
    except BaseException:
        await conn.close()
        raise
    return conn
