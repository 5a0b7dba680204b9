"""Writes done at once on the event loop's thread, when they need not wait.

An aiosqlite statement is a round trip to the connection's worker thread (~40-60 µs on a
loaded 2-core machine, as much as SQLite's own work for a small WAL commit). A write of one
statement that can take the write lock at once is cheaper run right here, on a second,
synchronous connection to the same file with no busy timeout: SQLite either runs and commits
it, or refuses it with SQLITE_BUSY before writing anything (another writer holds the lock).
Only then does the caller wait for the lock the usual way, on its aiosqlite connection, so
the event loop never blocks on another process. A transaction of several statements works the
same way (`begin`): its `BEGIN IMMEDIATE` either takes the write lock at once or is refused,
and the statements after it run under that lock without waiting for anything.

Same file, same WAL, same `synchronous` and `foreign_keys` settings: a statement committed
here is exactly as durable as one committed on the worker thread. Meant for
`synchronous=NORMAL`, where a WAL commit is a write without an fsync; a FULL commit's fsync
belongs on a worker thread (`commit` sends it there). The caller keeps its own
ordering (it holds its lock around both paths). Checkpoints stay off this connection (they
may fsync the database file); the caller runs one on its worker thread every
`CHECKPOINT_EVERY` writes made here.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

from loomgraph._storage.cursor import raise_constraint
from loomgraph._storage.sqlite_errors import is_busy
from loomgraph._storage.sqlite_held import GuardedConnection
from loomgraph._storage.sqlite_setup import Synchronous
from loomgraph.protocols.tasks import finished
from loomgraph.protocols.threads import run_in_thread

# About SQLite's default auto-checkpoint (1,000 pages) at 2-3 pages per one-row commit.
CHECKPOINT_EVERY = 400


class InlineWriter:
    """A synchronous connection for one-statement writes that never waits for a lock."""

    def __init__(self, path: str, *, synchronous: Synchronous) -> None:
        if path == ":memory:":
            raise ValueError("an in-memory database has no second connection")
        self.path = path
        self.synchronous = synchronous
        self._conn: sqlite3.Connection | None = None
        self._level: Synchronous = synchronous  # the connection's now (see `begin`)
        self._thread = 0
        self._since_checkpoint = 0

    def execute(self, sql: str, args: Sequence[Any]) -> int | None:
        """Run one statement as its own transaction: the rows it changed, or None when it
        would have to wait for another writer (nothing was written then)."""
        conn = self._conn if self._conn is not None else self._open()
        self._set_level(conn, self.synchronous)
        try:
            changed = conn.execute(sql, args).rowcount
        except sqlite3.OperationalError as err:
            if is_busy(err):
                return None
            raise
        self._since_checkpoint += 1
        return changed

    def begin(self, synchronous: Synchronous | None = None) -> sqlite3.Connection | None:
        """Begin a write transaction on this connection, committed at `synchronous` (default:
        the writer's own); None when it would have to wait for another writer, or when this
        is not the thread the connection was opened on (an object used from two event
        loops: each transaction stays on one connection)."""
        conn = self._conn if self._conn is not None else self._open()
        if self._thread != threading.get_ident():
            return None
        # SQLite refuses to change the level inside a transaction: set it before.
        self._set_level(conn, synchronous or self.synchronous)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as err:
            if is_busy(err):
                return None
            raise
        self._since_checkpoint += 1
        return conn

    async def commit(self, conn: sqlite3.Connection) -> None:
        """Commit the transaction `begin` began: here with NORMAL; with FULL, whose commit is
        an fsync, on a worker thread, so the event loop never waits for the disk."""
        if self._level != "FULL":
            conn.execute("COMMIT")
            return
        try:
            # A commit under way cannot be taken back: a cancelled caller lets it end before
            # the connection is used again, and a failed one leaves no transaction open.
            await finished(run_in_thread(conn.execute, "COMMIT"))
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    def _set_level(self, conn: sqlite3.Connection, level: Synchronous) -> None:
        if level != self._level:
            conn.execute(f"PRAGMA synchronous = {level}")
            self._level = level

    def checkpoint_due(self) -> bool:
        """Whether enough writes went through here that a checkpoint should run (once)."""
        if self._since_checkpoint < CHECKPOINT_EVERY:
            return False
        self._since_checkpoint = 0
        return True

    def close(self) -> None:
        """Close the connection; the next write opens it again."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _open(self) -> sqlite3.Connection:
        # timeout=0: a held lock is reported at once (SQLITE_BUSY), never waited for here.
        # check_same_thread=False: the caller's lock, not the thread, keeps uses apart.
        # GuardedConnection: never opened while this process reads the file directly.
        conn = sqlite3.connect(
            self.path,
            timeout=0,
            isolation_level=None,
            check_same_thread=False,
            factory=GuardedConnection,
        )
        try:
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._level = self.synchronous
        self._thread = threading.get_ident()
        return conn


class InlineCursor:
    """The `Cursor` of a transaction begun by `InlineWriter.begin`: its awaits never suspend."""

    def __init__(self, conn: sqlite3.Connection, *, constraints: bool = False) -> None:
        self._conn = conn
        self._constraints = constraints

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        try:
            return self._conn.execute(sql, args).rowcount
        except sqlite3.IntegrityError as err:
            raise_constraint(err, self._constraints)
            raise

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        """Run one query; its rows."""
        return self._conn.execute(sql, args).fetchall()
