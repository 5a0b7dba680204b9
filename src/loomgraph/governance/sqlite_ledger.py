"""`SqliteLedger`: a durable budget ledger in one SQLite file, safe for many processes (what
it shares with `PostgresLedger` is in `sql_ledger`)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

import aiosqlite

from loomgraph._storage.cursor import Cursor, SqliteCursor
from loomgraph._storage.sqlite_conn import SqliteConnection
from loomgraph._storage.sqlite_errors import unavailable_detail
from loomgraph._storage.sqlite_files import SqliteFileProblem, enable_wal, sqlite_problem
from loomgraph._storage.sqlite_inline import InlineWriter
from loomgraph._storage.sqlite_setup import (
    Synchronous,
    checked_busy_timeout,
    checked_synchronous,
    connect_sqlite,
    execute_all,
    set_busy_timeout,
)
from loomgraph.governance.ledger import LedgerUnavailable, _message
from loomgraph.governance.ledger_tables import ADDED_COLUMNS, ddl
from loomgraph.governance.sql_ledger import _SqlLedger

__all__ = ["SqliteLedger"]


class _SqliteLedgerUnavailable(LedgerUnavailable, SqliteFileProblem):
    """A `SqliteLedger`'s LedgerUnavailable; also the SqliteFileProblem (kind "unavailable")
    that opening one raised before, so code that catches that still does."""

    def __init__(self, where: str, detail: str) -> None:
        SqliteFileProblem.__init__(self, "unavailable", _message(where, detail))
        self.where = where
        self.detail = detail


class SqliteLedger(_SqlLedger):
    """A ledger in an SQLite file (it may be the runtime journal's file), safe for processes.

    One connection per object and event loop; each transaction is `BEGIN IMMEDIATE`, which
    takes the database's write lock before reading, so two processes can never both read the
    same totals and both reserve; waiting for the lock goes through `busy_timeout`.

    `synchronous` is SQLite's: with FULL (the default, also for a ledger kept in an Agent's
    journal file) every transaction that may add a hold is fsynced before it returns, so a
    reservation survives a power cut even where the journal's last writes do not (see
    `transact` for why the others need not be); with NORMAL none is, and each survives the
    process's death but not the machine's. A transaction that can take the write lock at
    once runs its statements on the event loop's thread; with FULL only its commit (the
    fsync) goes to a worker thread.

    A lock another connection holds past `busy_timeout`, and a file that cannot be opened,
    read or written, raise `LedgerUnavailable` naming the file (also a `SqliteFileProblem` of
    kind "unavailable"); a damaged file raises `SqliteFileProblem` of kind "corrupted".
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 30.0,
        synchronous: Synchronous = "FULL",
    ) -> None:
        super().__init__("")
        self.path = os.fspath(path)
        self.busy_timeout = checked_busy_timeout(busy_timeout)
        self.synchronous = checked_synchronous(synchronous)
        self.location = repr(self.path)  # as errors name it
        # Two objects on one file are one store; an in-memory database is its own.
        self._real_path = None if self.path == ":memory:" else os.path.realpath(self.path)
        self._place = ("sqlite", self._real_path) if self._real_path else ("ledger", id(self))
        # A connection's futures and an asyncio.Lock belong to one event loop: a new loop
        # gets a new connection.
        self._db = SqliteConnection(
            self._open, per_loop=True, translate=self._translate, watch=self.path
        )
        inline = self.path != ":memory:"
        self._inline = InlineWriter(self.path, synchronous=synchronous) if inline else None

    def __repr__(self) -> str:
        return f"SqliteLedger({self.path!r})"

    @property
    def place(self) -> Hashable:
        """The file (its real path)."""
        return self._place

    @property
    def kept_at(self) -> str | None:
        """The file's real path (None in memory)."""
        return self._real_path

    async def close(self) -> None:
        """Close the connections."""
        if self._inline is not None:
            self._inline.close()
        with contextlib.suppress(Exception):
            await self._db.close()

    @asynccontextmanager
    async def _transaction(self, durable: bool = True) -> AsyncIterator[Cursor]:
        level: Synchronous = self.synchronous if durable else "NORMAL"
        async with self._db.write(inline=self._inline, synchronous=level) as cur:
            yield cur

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[Cursor]:
        # No write lock: each read is one statement, which sees one committed state of the
        # WAL by itself, so reads go on while another process holds the lock for long.
        async with self._db.session() as conn:
            yield SqliteCursor(conn)

    def _translate(self, err: Exception) -> Exception:
        """An SQLite error that says the file cannot be used now as LedgerUnavailable;
        anything else (a constraint, damage, what `decide` raised) unchanged."""
        if isinstance(err, SqliteFileProblem):  # the file deleted or replaced (else as is)
            if err.kind == "unavailable" and not isinstance(err, LedgerUnavailable):
                return _SqliteLedgerUnavailable(self.location, str(err))
            return err
        if not isinstance(err, sqlite3.Error):
            return err
        detail = unavailable_detail(err, self.busy_timeout)
        return err if detail is None else _SqliteLedgerUnavailable(self.location, detail)

    def _open_failed(self, err: sqlite3.Error | SqliteFileProblem) -> Exception:
        """An error met while opening the file: LedgerUnavailable when the file cannot be
        used now, else a SqliteFileProblem naming the file."""
        if isinstance(err, sqlite3.Error):
            typed = self._translate(err)
            if typed is not err:
                return typed
            problem = sqlite_problem(self.path, err, self.busy_timeout)
            if problem.kind == "unavailable":  # any other error of opening, as before
                return _SqliteLedgerUnavailable(self.location, str(err))
            return problem
        if err.kind == "unavailable":
            return _SqliteLedgerUnavailable(self.location, str(err))
        return SqliteFileProblem(err.kind, f"{self.path}: {err}", err.integrity)

    async def _open(self) -> aiosqlite.Connection:
        """Connect, switch the file to WAL mode and make the tables, waiting up to
        `busy_timeout` for other connections doing the same (any number of processes may
        open one new file at once); past it, or when the file cannot be opened, raise
        LedgerUnavailable naming the file (SqliteFileProblem when it is damaged)."""
        try:
            conn = await connect_sqlite(self.path)
        except sqlite3.Error as err:
            raise self._open_failed(err) from None
        try:
            await set_busy_timeout(conn, self.busy_timeout)
            await conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            if self.path != ":memory:":
                # Reads the pragma's row: one left unread would turn the BEGIN IMMEDIATE of
                # execute_all into an upgrade that fails at once (see execute_all).
                await enable_wal(conn, self.busy_timeout)
            await execute_all(conn, ddl("", "REAL"))
            await _add_columns(conn)
        except BaseException as err:
            await conn.close()
            if isinstance(err, SqliteFileProblem | sqlite3.Error):
                raise self._open_failed(err) from None
            raise
        return conn


async def _add_columns(conn: aiosqlite.Connection) -> None:
    """Give a ledger made before them the columns it lacks (`ADDED_COLUMNS`), under the write
    lock: another process may be adding them at the same time."""
    await conn.execute("BEGIN IMMEDIATE")
    try:
        for table, column, kind in ADDED_COLUMNS:
            rows = await conn.execute_fetchall(f"PRAGMA table_info({table})")
            if column not in {str(r[1]) for r in rows}:
                await conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
