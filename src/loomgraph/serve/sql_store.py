"""The store in the journal's SQLite file or Postgres schema: keys and run reads in SQL.

The SQL store opens its own connection to the journal's file or server (the journal's own
connection is not shared), in a table of its own, `serve_api_keys`, created on first use.
Runs are read with the caller's user id (and the served agent's name) in the query, never
filtered after.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from loomgraph._storage.cursor import Cursor, PgCursor, SqliteCursor
from loomgraph._storage.pg_pool import LoopPool, import_asyncpg, open_pool, quote_ident
from loomgraph._storage.sqlite_conn import SqliteConnection
from loomgraph._storage.sqlite_files import SqliteFileProblem, open_sqlite
from loomgraph.engine.effects import APPROVAL_REQUEST_KIND
from loomgraph.protocols import RunRecord, RunStatus
from loomgraph.runtime.codec import run_from_row
from loomgraph.runtime.errors import JournalUnavailable
from loomgraph.runtime.schema import RUN_READ
from loomgraph.serve.api_keys import KEY_ID_CHARS, ApiKey, hash_key, key_id, new_key
from loomgraph.serve.run_pages import Everyone, RunPage, UnknownCursor, cursor_run_id

__all__ = ["PostgresStore", "SqlStore", "SqliteStore"]


class SqlStore:
    """The store in the journal's SQLite file or Postgres schema."""

    def __init__(self, prefix: str, placeholder_cursor: Any, agent_of: str) -> None:
        self._p = prefix
        self._cursor = placeholder_cursor
        # The name of the run's agent in its `initial` JSON, NULL when none was kept: read in
        # the query, so pages and cursors stay the query's (no column, no schema change).
        self._agent_of = agent_of

    def _ddl(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {self._p}serve_api_keys (key_hash TEXT PRIMARY KEY, "
            "user_id TEXT NOT NULL, approver INTEGER NOT NULL, label TEXT NOT NULL, "
            "created_at DOUBLE PRECISION NOT NULL)"
        ]

    @contextlib.asynccontextmanager
    async def _cur(self, *, writing: bool = False) -> AsyncIterator[Cursor]:
        async with self._cursor(writing) as cur:
            yield cur

    async def add_key(self, user_id: str, *, approver: bool = False, label: str = "") -> str:
        """Store a new key's hash; the key."""
        key = new_key()
        async with self._cur(writing=True) as cur:
            await cur.execute(
                f"INSERT INTO {self._p}serve_api_keys VALUES (?, ?, ?, ?, ?)",
                (hash_key(key), user_id, int(approver), label, time.time()),
            )
        return key

    async def key(self, key: str) -> ApiKey | None:
        """Who a key authenticates, or None."""
        found = await self._keys("WHERE key_hash = ?", (hash_key(key),))
        return found[0] if found else None

    async def keys(self) -> list[ApiKey]:
        """Every stored key, oldest first."""
        return await self._keys("ORDER BY created_at, key_hash", ())

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Delete the key with this id; what it was."""
        if len(key_id) != KEY_ID_CHARS:
            return None
        where = f"WHERE substr(key_hash, 1, {KEY_ID_CHARS}) = ?"
        found = await self._keys(where, (key_id,))
        if len(found) != 1:
            return None  # none, or (never seen) two keys sharing an id: delete neither
        async with self._cur(writing=True) as cur:
            await cur.execute(f"DELETE FROM {self._p}serve_api_keys {where}", (key_id,))
        return found[0]

    async def _keys(self, where: str, args: tuple[Any, ...]) -> list[ApiKey]:
        async with self._cur() as cur:
            rows = await cur.fetch(
                "SELECT user_id, approver, label, key_hash, created_at "
                f"FROM {self._p}serve_api_keys {where}",
                args,
            )
        return [ApiKey(r[0], bool(r[1]), r[2], key_id(r[3]), r[4]) for r in rows]

    def _agent_filter(self, agent: str | None, where: list[str], args: list[Any]) -> None:
        """Keep the runs an Agent called `agent` may go on with: the runs of that name, and
        those of no recorded name (`answers.may_go_on`, in SQL)."""
        if agent is not None:
            where.append(f"COALESCE({self._agent_of}, '') IN ('', ?)")
            args.append(agent)

    def _user_filter(self, user_id: str | Everyone, where: list[str], args: list[Any]) -> None:
        """Keep one user's runs (every user's: `EVERYONE`)."""
        if not isinstance(user_id, Everyone):
            where.append("user_id = ?")
            args.append(user_id)

    async def run(
        self, run_id: str, user_id: str | Everyone, *, agent: str | None = None
    ) -> RunRecord | None:
        """The run when it is this user's (and the agent's), all in the query."""
        where, args = ["run_id = ?"], list[Any]([run_id])
        self._user_filter(user_id, where, args)
        self._agent_filter(agent, where, args)
        async with self._cur() as cur:
            rows = await cur.fetch(
                f"SELECT {RUN_READ} FROM {self._p}runs WHERE {' AND '.join(where)}", args
            )
        return run_from_row(rows[0]) if rows else None

    async def runs(
        self,
        user_id: str | Everyone,
        *,
        status: RunStatus | None = None,
        graph: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        agent: str | None = None,
        asked: bool = False,
    ) -> RunPage:
        """A page of this user's runs, newest first, in the journal's row order; the cursor
        is the run id of the page's last run (its row number stays in the queries), one that
        asked an approver with `asked`."""
        where, args = list[str](), list[Any]()
        self._user_filter(user_id, where, args)
        self._agent_filter(agent, where, args)
        if status is not None:
            where.append("status = ?")
            args.append(str(status))
        if graph is not None:
            where.append("graph_name = ?")
            args.append(graph)
        if cursor is not None:
            where.append("n < ?")
        sql = (
            f"SELECT {RUN_READ}, n FROM {self._p}runs WHERE {' AND '.join(where) or 'TRUE'} "
            f"ORDER BY n DESC LIMIT {int(limit) + 1}"
        )
        async with self._cur() as cur:
            if cursor is not None:
                args.append(await self._row_of(cur, cursor, user_id, agent, asked))
            rows: Sequence[Sequence[Any]] = await cur.fetch(sql, args)
        page = [run_from_row(tuple(r)[:-1]) for r in rows[:limit]]
        more = len(rows) > limit
        return RunPage(page, page[-1].run_id if more and page else None)

    async def _row_of(
        self, cur: Cursor, cursor: str, user_id: str | Everyone, agent: str | None, asked: bool
    ) -> int:
        """The row number of the run a cursor names, when it is this user's (and the agent's,
        and one that asked an approver with `asked`: whatever the page's other filters);
        `UnknownCursor` for any other."""
        where, args = ["run_id = ?"], list[Any]([cursor_run_id(cursor)])
        self._user_filter(user_id, where, args)
        self._agent_filter(agent, where, args)
        if asked:
            where.append(
                f"EXISTS (SELECT 1 FROM {self._p}effects e WHERE e.run = r.n AND e.kind = ?)"
            )
            args.append(APPROVAL_REQUEST_KIND)
        found = await cur.fetch(
            f"SELECT r.n FROM {self._p}runs r WHERE {' AND '.join(where)}", args
        )
        if not found:
            raise UnknownCursor(cursor)
        return int(found[0][0])

    async def close(self) -> None:
        """Overridden by each backend."""


# The agent's name in a Postgres run's `initial` (json). `->>` fails on a document holding
# `\u0000` (a prompt's NUL: the Python API takes it), which would break the user's listings;
# such a one is read with each escaped backslash spelt `\u005c` (so a `\u0000` left is a NUL),
# each NUL as U+FFFD.
_PG_AGENT_OF = (
    r"(CASE WHEN strpos(initial::text, E'\\u0000') > 0 THEN (replace(replace(initial::text, "
    r"E'\\\\', E'\\u005c'), E'\\u0000', E'\\ufffd'))::json->>'agent' "
    r"ELSE initial->>'agent' END)"
)


class SqliteStore(SqlStore):
    """The store in the journal's SQLite file."""

    def __init__(self, path: str) -> None:
        self.path = path
        # Watched: a key added after the file was deleted or replaced is refused (see docs).
        self._db = SqliteConnection(self._open, translate=self._translate, watch=path)
        super().__init__("", self._session, "json_extract(initial, '$.agent')")

    def _translate(self, err: Exception) -> Exception:
        if isinstance(err, SqliteFileProblem) and err.kind == "unavailable":
            return JournalUnavailable(repr(self.path), str(err))  # the journal's own file
        return err

    async def _open(self) -> Any:
        conn = await open_sqlite(self.path, busy_timeout=30.0, verify=False)
        await conn.execute("BEGIN IMMEDIATE")
        for statement in self._ddl():
            await conn.execute(statement)
        await conn.execute("COMMIT")
        return conn

    @contextlib.asynccontextmanager
    async def _session(self, writing: bool) -> AsyncIterator[Cursor]:
        async with self._db.session(writing=writing) as conn:
            yield SqliteCursor(conn)

    async def close(self) -> None:
        """Close the connection."""
        await self._db.close()


class PostgresStore(SqlStore):
    """The store in the journal's Postgres schema."""

    def __init__(self, dsn: str, schema: str) -> None:
        self._pg = import_asyncpg("the key store")
        self.dsn, self.schema = dsn, schema
        self._pools = LoopPool(self._open)
        super().__init__(quote_ident(schema) + ".", self._session, _PG_AGENT_OF)

    async def _open(self) -> Any:
        async def setup(con: Any) -> None:
            await con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.schema)}")
            for statement in self._ddl():
                await con.execute(statement)

        return await open_pool(
            self._pg, self.dsn, pool_size=4, setup=setup, lock=f"loomgraph.serve:{self.schema}"
        )

    @contextlib.asynccontextmanager
    async def _session(self, writing: bool) -> AsyncIterator[Cursor]:
        async with self._pools.cursor(transaction=False) as cur:
            yield _PgRows(cur)

    async def close(self) -> None:
        """Close the pool."""
        await self._pools.close()


class _PgRows:
    """A Postgres cursor whose rows are plain tuples."""

    def __init__(self, cur: PgCursor) -> None:
        self._cur = cur

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return await self._cur.execute(sql, args)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        if any(isinstance(a, str) and "\x00" in a for a in args):
            return []  # Postgres text holds no NUL (and refuses one): no row has one
        return [tuple(r) for r in await self._cur.fetch(sql, args)]
