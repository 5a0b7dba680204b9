"""`SqliteRuntime`: the durable journal in one SQLite file (WAL mode, safe for many processes)."""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite

from loomgraph._storage.cursor import SqliteCursor
from loomgraph._storage.sqlite_conn import SqliteConnection
from loomgraph._storage.sqlite_errors import reads_as_damaged, unavailable_detail
from loomgraph._storage.sqlite_files import SqliteFileProblem, open_sqlite
from loomgraph._storage.sqlite_inline import InlineWriter
from loomgraph._storage.sqlite_setup import (
    Synchronous,
    checked_busy_timeout,
    checked_synchronous,
    execute_all,
)
from loomgraph._storage.sqlite_wal_loss import WalLoss, lost_wal_frames
from loomgraph.protocols.backend_specs import sqlite_path, sqlite_path_problem
from loomgraph.protocols.ledger import LedgerSite, SqliteSite
from loomgraph.protocols.runtime import RunRecord
from loomgraph.runtime.errors import (
    JournalCorrupted,
    JournalDamaged,
    JournalUnavailable,
    JournalVersionError,
    RunPossiblyLost,
    UnknownRun,
)
from loomgraph.runtime.schema import (
    ADDED_COLUMNS,
    SCHEMA_VERSION,
    Dialect,
    audit_outbox_table,
    ddl,
    graphs_table,
    migrate_from_v1,
    v1_orphans,
)
from loomgraph.runtime.sql_journal import Cursor, SqlJournal

SQLITE = Dialect(
    prefix="",
    integer="INTEGER",
    real="REAL",
    json="TEXT",
    serial="INTEGER PRIMARY KEY",
    now="((julianday('now') - 2440587.5) * 86400.0)",
    without_rowid=" WITHOUT ROWID",
)


class SqliteRuntime(SqlJournal):
    """A journal in one SQLite file; several processes may write it at once.

    One connection per object, opened on first use; every statement of this object is
    serialised by an asyncio lock, and each write is one `BEGIN IMMEDIATE` transaction, so
    waiting for another process's write lock goes through `busy_timeout` instead of failing
    with "database is locked".

    A damaged file is refused when opened, before anything is read or written
    (`JournalDamaged`). A `-wal` lost after a crash is refused too unless `accept_damage=True`:
    then the journal opens without the lost transactions and remembers the loss, and a run id
    it does not hold raises `RunPossiblyLost` instead of returning None.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        snapshot_every: int = 200,
        lease_seconds: float = 30.0,
        busy_timeout: float = 30.0,
        synchronous: Synchronous = "NORMAL",
        verify: bool = True,
        accept_damage: bool = False,
    ) -> None:
        self.path = sqlite_path(path, "SqliteRuntime")
        if (problem := sqlite_path_problem(self.path)) is not None:
            raise ValueError(f"SqliteRuntime: {problem}")
        super().__init__(
            SQLITE, repr(self.path), snapshot_every=snapshot_every, lease_seconds=lease_seconds
        )
        self.busy_timeout = checked_busy_timeout(busy_timeout)
        self.synchronous = checked_synchronous(synchronous)
        self.verify = verify
        self.accept_damage = accept_damage
        self._damage: str | None = None  # the recorded loss of committed transactions, if any
        # Watched: a write after the file was deleted or replaced is refused (see docs).
        self._db = SqliteConnection(self._open, translate=self._translate, watch=self.path)
        # One-statement writes are done on the loop's thread when they need not wait; not
        # with FULL, whose every commit is an fsync, which must not block the event loop.
        inline = self.path != ":memory:" and synchronous == "NORMAL"
        self._inline = InlineWriter(self.path, synchronous=synchronous) if inline else None

    def __repr__(self) -> str:
        return f"SqliteRuntime({self.path!r})"

    # ------------------------------------------------------------------ lifecycle

    async def connect(self) -> None:
        """Open, check and (when new) create the journal now rather than on first use."""
        async with self._db.session():
            pass

    async def close(self) -> None:
        """Close the connections; the next use opens them again."""
        if self._inline is not None:
            # First: the last connection to close checkpoints the file, which may fsync;
            # that belongs on the worker thread, not the event loop's.
            self._inline.close()
        await self._db.close()

    async def checkpoint(self) -> None:
        """Move the write-ahead log into the database file and truncate the log."""
        async with self._db.session() as conn:
            await conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @property
    def ledger_site(self) -> LedgerSite | None:
        """This file, to keep a budget ledger in (None for an in-memory database)."""
        return None if self.path == ":memory:" else SqliteSite(self.path)

    # ------------------------------------------------------------------ lost runs

    async def load_run(self, run_id: str) -> RunRecord | None:
        """A run's record; None, or `RunPossiblyLost` when the journal is known to have lost
        committed transactions."""
        record = await super().load_run(run_id)
        if record is None and self._damage is not None:
            raise RunPossiblyLost(run_id, self.location, self._damage)
        return record

    # ------------------------------------------------------------------ sessions

    async def _exec(self, name: str, args: Sequence[Any]) -> int:
        # A lone statement, the journal's per-write path: straight to the connection.
        return await self._db.execute(self._sql[name], args, inline=self._inline)

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[Cursor]:
        async with self._db.session() as conn:
            yield SqliteCursor(conn, constraints=True)

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[Cursor]:
        # (A lone write statement via _read() is begun IMMEDIATE by SQLite itself.)
        async with self._db.write(inline=self._inline, constraints=True) as cur:
            yield cur

    def _translate(self, err: Exception) -> Exception:
        if isinstance(err, SqliteFileProblem):  # the file was deleted or replaced
            return _typed(err, self.location)
        if not isinstance(err, sqlite3.Error) or isinstance(err, sqlite3.IntegrityError):
            # An IntegrityError is a record that breaks a NOT NULL column: the caller's bug,
            # not the file's.
            return err
        if reads_as_damaged(err):
            return JournalCorrupted(self.location, str(err))
        detail = unavailable_detail(err, self.busy_timeout)
        return JournalUnavailable(self.location, str(err) if detail is None else detail)

    # ------------------------------------------------------------------ opening

    async def _open(self) -> aiosqlite.Connection:
        """Connect, refuse foreign or damaged files before writing anything, then set up."""
        loss: WalLoss | None = None
        if self.accept_damage and self.path != ":memory:":
            loss = lost_wal_frames(self.path)  # read before SQLite rebuilds the -shm
        try:
            conn = await open_sqlite(
                self.path,
                busy_timeout=self.busy_timeout,
                verify=self.verify,
                accept_lost_wal=self.accept_damage,
            )
        except SqliteFileProblem as problem:
            raise _typed(problem, self.location) from None
        try:
            version = await _schema_version(conn)
            if version not in (None, "1", str(SCHEMA_VERSION)):
                raise JournalVersionError(self.location, version, SCHEMA_VERSION)
            await conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            await conn.execute("PRAGMA foreign_keys = ON")
            if version is None:
                await execute_all(conn, ddl(SQLITE))
            else:
                await _add_columns(conn)
                if version == "1":
                    await _migrate(conn, self.location)
            if loss is not None:
                await conn.execute(
                    "INSERT OR REPLACE INTO journal_meta (key, value) VALUES ('damage', ?)",
                    (loss.detail,),
                )
            rows = list(
                await conn.execute_fetchall("SELECT value FROM journal_meta WHERE key = 'damage'")
            )
            self._damage = str(rows[0][0]) if rows else None
        except BaseException:
            await conn.close()
            raise
        return conn


def _possibly_lost(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """The journal method, with `UnknownRun` turned into `RunPossiblyLost` when the journal
    is known to have lost committed transactions."""

    @functools.wraps(method)
    async def wrapper(self: SqliteRuntime, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except UnknownRun as err:
            if type(err) is not UnknownRun or self._damage is None:
                raise
            raise RunPossiblyLost(err.run_id, self.location, self._damage) from None

    return wrapper


# Every method that raises UnknownRun for a run id it does not hold.
for _name in (
    "append_transition",
    "transitions",
    "transitions_after",
    "latest_snapshot",
    "begin_effect",
    "end_effect",
    "finish_run",
    "record_recovery",
    "reset_recoveries",
    "acquire_lease",
    "move_run",
    "keep_audit_entries",
):
    setattr(SqliteRuntime, _name, _possibly_lost(getattr(SqlJournal, _name)))


async def _schema_version(conn: aiosqlite.Connection) -> str | None:
    """The version in journal_meta, or None for a file without a journal yet."""
    tables = await conn.execute_fetchall(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'journal_meta'"
    )
    if not list(tables):
        return None
    rows = list(
        await conn.execute_fetchall("SELECT value FROM journal_meta WHERE key = 'schema_version'")
    )
    return str(rows[0][0]) if rows else None


async def _add_columns(conn: aiosqlite.Connection) -> None:
    """Give a journal made before fencing, dead letters, kept graphs and the audit outbox
    their columns and tables (once)."""
    missing = [
        (table, column, constraint)
        for table, column, constraint in ADDED_COLUMNS
        if column not in {r[1] for r in await conn.execute_fetchall(f"PRAGMA table_info({table})")}
    ]
    present = {
        r[0]
        for r in await conn.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name IN ('graphs', 'audit_outbox')"
        )
    }
    tables = {"graphs": graphs_table(SQLITE), "audit_outbox": audit_outbox_table(SQLITE)}
    absent = [create for name, create in tables.items() if name not in present]
    if not missing and not absent:
        return
    await conn.execute("BEGIN IMMEDIATE")
    try:
        for create in absent:  # IF NOT EXISTS: another process may have made it meanwhile
            await conn.execute(create)
        for table, column, constraint in missing:
            have = {r[1] for r in await conn.execute_fetchall(f"PRAGMA table_info({table})")}
            if column not in have:  # another process may have added it meanwhile
                await conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER {constraint}")
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise


async def _migrate(conn: aiosqlite.Connection, where: str) -> None:
    """Rewrite a version-1 journal as the current version, in one transaction (so a crash
    leaves it version 1), unless another process did so meanwhile."""
    await conn.execute("BEGIN IMMEDIATE")
    try:
        if await _schema_version(conn) == "1":
            orphans = next(iter(await conn.execute_fetchall(v1_orphans(SQLITE))))[0]
            if orphans:
                raise JournalCorrupted(where, f"{orphans} rows of no run; not migrated")
            try:
                for statement in migrate_from_v1(SQLITE):
                    await conn.execute(statement)
            except sqlite3.Error as err:
                raise JournalCorrupted(
                    where, f"rewriting schema version 1 as {SCHEMA_VERSION} failed: {err}"
                ) from None
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise


def _typed(problem: SqliteFileProblem, where: str) -> Exception:
    if problem.kind == "unavailable":
        return JournalUnavailable(where, str(problem))
    detail = str(problem)
    if problem.loss is not None and not problem.loss.foreign:
        detail += (
            "; to open it without them, pass accept_damage=True (a run it no longer holds "
            "then raises RunPossiblyLost)"
        )
    elif problem.loss is not None:
        detail += "; move that -wal aside first"
    return JournalDamaged(where, detail, problem.integrity or "not run")
