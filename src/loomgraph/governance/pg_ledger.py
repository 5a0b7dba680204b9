"""`PostgresLedger`: the budget ledger in PostgreSQL tables, shared by any number of processes
(the statements and the read-check-write it shares with the SQLite one are in `sql_ledger`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from loomgraph._storage.cursor import Cursor
from loomgraph._storage.dsn import database_of, describe_schema
from loomgraph._storage.lock_keys import advisory_key
from loomgraph._storage.pg_pool import (
    LoopPool,
    checked_timeouts,
    import_asyncpg,
    open_pool,
    out_of_service,
    quote_ident,
)
from loomgraph.governance.ledger import LedgerUnavailable
from loomgraph.governance.ledger_tables import ADDED_COLUMNS, INDEXES, TABLES, ddl
from loomgraph.governance.sql_ledger import _SqlLedger

__all__ = ["PostgresLedger"]


class PostgresLedger(_SqlLedger):
    """A ledger in PostgreSQL tables (in `schema`), shared by any number of processes.

    Each transaction takes `pg_advisory_xact_lock` on every scope it reads, in sorted order,
    before reading their totals: transactions on one user serialise, those on different users
    do not (unless a global cap puts every reservation on the `global` scope). The hold a
    transaction ends is read again once its scopes are locked: under READ COMMITTED the read
    that named them may predate a settlement of the same hold, which must not be undone twice.

    `connect_timeout` bounds making a connection and `command_timeout` every statement
    (seconds), as `PostgresRuntime`'s do: a server that refuses, drops the connection or does
    not answer raises `LedgerUnavailable` (naming the server without its password) within
    them instead of blocking the run.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        pool_size: int = 4,
        connect_timeout: float = 10.0,
        command_timeout: float = 15.0,
    ) -> None:
        checked_timeouts(connect_timeout, command_timeout)
        # The journal's rule for a schema's name (ValueError naming it), so a ledger fits any
        # schema a journal takes.
        super().__init__(quote_ident(schema) + ".")
        self._pg = import_asyncpg("PostgresLedger")
        self.dsn = dsn
        self.schema = schema
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.location = describe_schema(dsn, schema)  # as errors name it
        # Waiting for a pooled connection may mean making one, then a statement on it.
        self._pools = LoopPool(self._open, timeout=connect_timeout + command_timeout)

    def __repr__(self) -> str:
        return f"PostgresLedger(schema={self.schema!r})"

    @property
    def place(self) -> Hashable:
        """The server's database (as its DSN says) and the schema."""
        return ("postgres", self.dsn, self.schema)

    @property
    def kept_at(self) -> str:
        """The database and schema, not the server: one reached through another host name,
        port or pooler is the same ledger."""
        return f"postgres database {database_of(self.dsn)!r}, schema {self.schema!r}"

    async def close(self) -> None:
        """Close the pool."""
        await self._pools.close()

    def _key(self, scope: str) -> int:
        return advisory_key(f"loomgraph.budget:{self.schema}:{scope}")

    async def _lock_scopes(self, cur: Cursor, scopes: Sequence[str]) -> None:
        for scope in sorted(scopes):
            await cur.fetch("SELECT pg_advisory_xact_lock(?)", [self._key(scope)])

    async def _open(self) -> Any:
        return await open_pool(
            self._pg,
            self.dsn,
            pool_size=self.pool_size,
            timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            setup=self._setup,
            unavailable=lambda detail: LedgerUnavailable(self.location, detail),
            translate=self._translate,
        )

    def _translate(self, err: Exception) -> Exception:
        """A server that cannot be reached, or that ended or refused the work for a reason
        of its own (shutting down, out of resources, a lock or idle timeout), and tables
        that are gone (dropped while in use), as LedgerUnavailable: a run stays to be
        resumed; anything else (a constraint, what `decide` raised) unchanged."""
        if isinstance(err, self._pg.UndefinedTableError):
            return LedgerUnavailable(
                self.location, f"its tables are gone (dropped while in use?): {err}"
            )
        why = out_of_service(self._pg, err, self.dsn, self.connect_timeout, self.command_timeout)
        return err if why is None else LedgerUnavailable(self.location, why)

    def _conflicted(self, err: Exception) -> bool:
        """A deadlock or a serialization failure (SQLSTATE class 40): the server rolled the
        transaction back, and another one went on."""
        return isinstance(err, self._pg.TransactionRollbackError)

    async def _setup(self, con: Any) -> None:
        if await self._made(con):
            return
        # Creators racing on CREATE TABLE IF NOT EXISTS collide in the catalog.
        await con.execute("SELECT pg_advisory_xact_lock($1)", self._key(""))
        await con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.schema)}")
        prefix = quote_ident(self.schema) + "."
        for statement in ddl(prefix, "DOUBLE PRECISION"):
            await con.execute(statement)
        for table, column, kind in ADDED_COLUMNS:  # tables made before these columns
            await con.execute(
                f"ALTER TABLE {prefix}{table} ADD COLUMN IF NOT EXISTS {column} {kind}"
            )

    async def _made(self, con: Any) -> bool:
        """Whether the schema has every table, index and column of the ledger: then it is
        left alone. Even with IF NOT EXISTS, `ALTER TABLE` and `CREATE INDEX` lock the table
        (ACCESS EXCLUSIVE, SHARE): a worker starting would wait for, and could deadlock
        with, the ledger transactions of the runs other workers advance."""
        found = await con.fetchval(
            "SELECT (SELECT count(*) FROM information_schema.tables"
            "        WHERE table_schema = $1 AND table_name = ANY($2::text[]))"
            "     + (SELECT count(*) FROM pg_indexes"
            "        WHERE schemaname = $1 AND indexname = ANY($3::text[]))"
            "     + (SELECT count(*) FROM information_schema.columns WHERE table_schema = $1"
            "        AND table_name || '.' || column_name = ANY($4::text[]))",
            self.schema,
            list(TABLES),
            list(INDEXES),
            [f"{table}.{column}" for table, column, _ in ADDED_COLUMNS],
        )
        return int(found) == len(TABLES) + len(INDEXES) + len(ADDED_COLUMNS)

    @asynccontextmanager
    async def _transaction(self, durable: bool = True) -> AsyncIterator[Cursor]:
        # Every commit waits for the server's WAL flush (synchronous_commit as configured).
        # The driver's error is dropped from a translated one's traceback (it may name the
        # DSN's password).
        async with self._pools.cursor(translate=self._translate) as cur:
            yield cur
