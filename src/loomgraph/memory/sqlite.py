"""`SqliteMemory`: long-term memory in one SQLite file (WAL, FTS5 recall), for many processes."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import aiosqlite

from loomgraph._storage.cursor import Cursor, SqliteCursor
from loomgraph._storage.sqlite_conn import SqliteConnection
from loomgraph._storage.sqlite_errors import reads_as_damaged, unavailable_detail
from loomgraph._storage.sqlite_files import SqliteFileProblem, open_sqlite
from loomgraph._storage.sqlite_setup import checked_busy_timeout, set_busy_timeout
from loomgraph.memory.errors import (
    MemoryBackendError,
    MemoryCorrupted,
    MemoryInputError,
    MemoryUnavailable,
)
from loomgraph.memory.records import Fact, MemoryLimits
from loomgraph.memory.schema import (
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    forgotten_table,
    migration,
    tables_of,
    writer_columns,
)
from loomgraph.memory.sql import EPISODE_COLS, FACT_COLS, SqlMemory, episode_of, fact_of
from loomgraph.protocols import Episode
from loomgraph.protocols.backend_specs import sqlite_path, sqlite_path_problem


def _fts(table: str, columns: str) -> list[str]:
    """An FTS5 index kept in step with `table` by triggers (external content: no text copy)."""
    cols = [c.strip() for c in columns.split(",")]
    new = ", ".join(f"new.{c}" for c in cols)
    old = ", ".join(f"old.{c}" for c in cols)
    return [
        f"CREATE VIRTUAL TABLE {table}_fts USING fts5({columns}, content='{table}', "
        "content_rowid='id', tokenize='porter unicode61')",
        f"CREATE TRIGGER {table}_ai AFTER INSERT ON {table} BEGIN "
        f"INSERT INTO {table}_fts (rowid, {columns}) VALUES (new.id, {new}); END",
        f"CREATE TRIGGER {table}_ad AFTER DELETE ON {table} BEGIN "
        f"INSERT INTO {table}_fts ({table}_fts, rowid, {columns}) "
        f"VALUES ('delete', old.id, {old}); END",
        f"CREATE TRIGGER {table}_au AFTER UPDATE ON {table} BEGIN "
        f"INSERT INTO {table}_fts ({table}_fts, rowid, {columns}) "
        f"VALUES ('delete', old.id, {old}); "
        f"INSERT INTO {table}_fts (rowid, {columns}) VALUES (new.id, {new}); END",
    ]


# Every run that stated a fact (memory.chain); IF NOT EXISTS: also the migration's.
SOURCES = [
    "CREATE TABLE IF NOT EXISTS memory_fact_sources (id INTEGER PRIMARY KEY, "
    "user_id TEXT NOT NULL, fact_id INTEGER NOT NULL, session_id TEXT, source_run TEXT, "
    "confidence REAL NOT NULL, at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS memory_fact_sources_fact ON memory_fact_sources (user_id, fact_id)",
    "CREATE INDEX IF NOT EXISTS memory_fact_sources_session ON memory_fact_sources "
    "(user_id, session_id)",
]

DDL = [
    "CREATE TABLE memory_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE memory_episodes (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, "
    "session_id TEXT, run_id TEXT NOT NULL, prompt TEXT NOT NULL, output TEXT NOT NULL, "
    "tool_calls TEXT NOT NULL, at REAL NOT NULL, started_at double precision, "
    "fence bigint NOT NULL DEFAULT 0, UNIQUE (user_id, run_id))",
    "CREATE INDEX memory_episodes_session ON memory_episodes (user_id, session_id, at)",
    *_fts("memory_episodes", "prompt, output"),
    "CREATE TABLE memory_facts (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, "
    "key TEXT NOT NULL, subject TEXT NOT NULL, predicate TEXT NOT NULL, object TEXT NOT NULL, "
    "confidence REAL NOT NULL, source_run TEXT, valid_from REAL NOT NULL, valid_to REAL, "
    "session_id TEXT)",
    # At most one current fact per (user, subject, predicate), whatever the writers do.
    "CREATE UNIQUE INDEX memory_facts_current ON memory_facts (user_id, key) "
    "WHERE valid_to IS NULL",
    "CREATE INDEX memory_facts_user ON memory_facts (user_id, valid_from)",
    "CREATE INDEX memory_facts_session ON memory_facts (user_id, session_id)",
    *_fts("memory_facts", "subject, predicate, object"),
    "CREATE TABLE memory_blocks (user_id TEXT NOT NULL, name TEXT NOT NULL, "
    "text TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL, "
    "PRIMARY KEY (user_id, name))",
    *SOURCES,
    *forgotten_table(""),
    f"INSERT INTO memory_meta VALUES ('schema_version', '{SCHEMA_VERSION}')",
]
_FTS = ("memory_episodes_fts", "memory_facts_fts")


def match_query(terms: Sequence[str]) -> str:
    """An FTS5 query matching any of the terms (each quoted, so no term is an operator)."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


class SqliteMemory(SqlMemory):
    """Memory in one SQLite file; it may share the file with a SqliteRuntime journal.

    One connection per object, opened on first use; statements of one object are serialised
    by an asyncio lock, and each write is one `BEGIN IMMEDIATE` transaction, so other
    processes' writes are waited for (up to `busy_timeout`) instead of failing. `path` must
    name a file: ':memory:' and '' are refused (`MemoryInputError`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        limits: MemoryLimits | None = None,
        busy_timeout: float = 30.0,
        verify: bool = True,
    ) -> None:
        busy_timeout = checked_busy_timeout(busy_timeout, error=MemoryInputError)
        super().__init__(limits)
        self.path = sqlite_path(path, "SqliteMemory")
        if (problem := sqlite_path_problem(self.path)) is not None and self.path:
            raise MemoryInputError(f"SqliteMemory: {problem}")
        if self.path in ("", ":memory:"):
            # SQLite gives each connection its own private database for these, and the
            # connection is reopened after close() and for every new event loop.
            raise MemoryInputError(
                f"SqliteMemory({self.path!r}) would lose every row when its connection is "
                "reopened (after close(), in a new event loop): ':memory:' and '' are a "
                "private database of one connection. Give a file path (memory="
                "'sqlite:./memory.db'), or use InMemoryMemory (memory='memory') for memory "
                "that lives as long as the process"
            )
        self.where = f"sqlite memory {self.path!r}"
        self.busy_timeout = busy_timeout
        self.verify = verify
        self._db = SqliteConnection(self._open, translate=self._translate, watch=self.path)

    def __repr__(self) -> str:
        return f"SqliteMemory({self.path!r})"

    async def connect(self) -> None:
        """Open, check and (when new) create the tables now rather than on first use."""
        async with self._db.session():
            pass

    async def close(self) -> None:
        """Close the connection; the next use opens it again."""
        await self._db.close()

    # ------------------------------------------------------------------ sessions

    @asynccontextmanager
    async def _tx(self, key: str, *, write: bool = False) -> AsyncIterator[Cursor]:
        # A write takes the lock up front (IMMEDIATE), where busy_timeout applies.
        async with self._db.transaction("BEGIN IMMEDIATE" if write else "BEGIN") as conn:
            yield SqliteCursor(conn)

    def _translate(self, err: Exception) -> Exception:
        if isinstance(err, SqliteFileProblem):  # the file was deleted or replaced
            return _typed(err, self.where)
        if not isinstance(err, sqlite3.Error):
            return err
        if reads_as_damaged(err):
            return MemoryCorrupted(self.where, str(err))
        detail = unavailable_detail(err, self.busy_timeout)
        if detail is not None:
            return MemoryUnavailable(self.where, detail)
        return MemoryBackendError(self.where, str(err))  # e.g. a constraint a trigger raised

    # ------------------------------------------------------------------ forgetting

    async def _scrub(self, cur: Cursor) -> None:
        # An FTS5 delete only adds a tombstone: the old entry's words stay in the index's
        # pages until a merge that may never come (SQLite 3.40 has no `secure-delete`
        # option). `optimize` merges each index into one segment without them; the pages
        # it frees are zeroed (`secure_delete`, set on open).
        for table in _FTS:
            await cur.execute(f"INSERT INTO {table} ({table}) VALUES ('optimize')", [])

    async def _forget(self, key: str, session_id: str | None, before: float | None) -> int:
        count = await super()._forget(key, session_id, before)
        if count:
            await self._truncate_log()
        return count

    async def _truncate_log(self) -> None:
        """Copy the write-ahead log into the file and empty it, so the page images of the
        forgotten rows go with it. Only when no other connection is reading (it does not
        wait): else SQLite's next complete checkpoint resets the log."""
        async with self._db.session() as conn:
            try:
                await conn.execute_fetchall("PRAGMA busy_timeout = 0")
                await conn.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass  # the forget is committed; the log is emptied later
            finally:
                await set_busy_timeout(conn, self.busy_timeout)

    # ------------------------------------------------------------------ search

    async def _search_episodes(
        self, key: str, terms: list[str], exclude_session: str | None, limit: int
    ) -> list[Episode]:
        cols = ", ".join(f"e.{c.strip()}" for c in EPISODE_COLS.split(","))
        other, args = "", [match_query(terms), key]
        if exclude_session is not None:
            other, args = " AND e.session_id IS NOT ?", [*args, exclude_session]
        async with self._tx(key) as cur:
            rows = await cur.fetch(
                f"SELECT {cols} FROM memory_episodes_fts f JOIN memory_episodes e "
                "ON e.id = f.rowid WHERE memory_episodes_fts MATCH ? AND e.user_id = ?"
                f"{other} ORDER BY bm25(memory_episodes_fts), e.at DESC, e.id DESC LIMIT ?",
                [*args, limit],
            )
        return [episode_of(key, r) for r in rows]

    async def _search_facts(self, key: str, terms: list[str], limit: int) -> list[Fact]:
        cols = ", ".join(f"x.{c.strip()}" for c in FACT_COLS.split(","))
        async with self._tx(key) as cur:
            rows = await cur.fetch(
                f"SELECT {cols} FROM memory_facts_fts f JOIN memory_facts x ON x.id = f.rowid "
                "WHERE memory_facts_fts MATCH ? AND x.user_id = ? AND x.valid_to IS NULL "
                "ORDER BY bm25(memory_facts_fts), x.valid_from DESC, x.id DESC LIMIT ?",
                [match_query(terms), key, limit],
            )
        return [fact_of(key, r) for r in rows]

    # ------------------------------------------------------------------ opening

    async def _open(self) -> aiosqlite.Connection:
        """Connect; refuse foreign or damaged files before writing anything; create tables."""
        try:
            conn = await open_sqlite(self.path, busy_timeout=self.busy_timeout, verify=self.verify)
        except SqliteFileProblem as problem:
            raise _typed(problem, self.where) from None
        try:
            # Deleted rows' text is overwritten, not left in free space (`forget`). Its row
            # is read, so the statement is finished before the BEGIN (`execute_all`).
            await conn.execute_fetchall("PRAGMA secure_delete = ON")
            await conn.execute("BEGIN IMMEDIATE")
            try:
                await self._create_or_check(conn)
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _create_or_check(self, conn: aiosqlite.Connection) -> None:
        names = {
            str(r[0])
            for r in await conn.execute_fetchall(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        }
        if "memory_meta" not in names:
            if any(n.startswith("memory_") for n in names):
                raise MemoryCorrupted(self.where, "memory tables without memory_meta")
            for statement in DDL:
                await conn.execute(statement)
            return
        rows = list(
            await conn.execute_fetchall(
                "SELECT value FROM memory_meta WHERE key = 'schema_version'"
            )
        )
        if not rows or rows[0][0] not in READABLE_VERSIONS:
            found = rows[0][0] if rows else "none"
            raise MemoryCorrupted(
                self.where, f"schema version {found}; this loomgraph reads version {SCHEMA_VERSION}"
            )
        required = (*tables_of(rows[0][0]), *_FTS)
        missing = [t for t in required if t not in names]
        if missing:
            raise MemoryCorrupted(self.where, f"missing table(s): {', '.join(missing)}")
        if rows[0][0] != str(SCHEMA_VERSION):  # an older version: migrated in this transaction
            have = {
                str(r[1]) for r in await conn.execute_fetchall("PRAGMA table_info(memory_episodes)")
            }
            create = [*SOURCES, *forgotten_table(""), *writer_columns("", have)]
            for statement in migration("", rows[0][0], create, []):
                await conn.execute(statement)


def _typed(problem: SqliteFileProblem, where: str) -> Exception:
    cls = MemoryUnavailable if problem.kind == "unavailable" else MemoryCorrupted
    return cls(where, str(problem))
