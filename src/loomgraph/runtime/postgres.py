"""`PostgresRuntime`: the durable journal in PostgreSQL, for many processes on many machines.

asyncpg is imported when a PostgresRuntime is made, so importing loomgraph without the
`postgres` extra still works.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

from loomgraph._storage.dsn import describe_dsn, describe_schema
from loomgraph._storage.pg_pool import (
    LoopPool,
    checked_timeouts,
    failure,
    import_asyncpg,
    open_pool,
    out_of_service,
    quote_ident,
)
from loomgraph.protocols import RunRecord
from loomgraph.protocols.backend_specs import dsn_problem
from loomgraph.protocols.ledger import LedgerSite, PostgresSite
from loomgraph.runtime.codec import run_row
from loomgraph.runtime.errors import (
    JournalCorrupted,
    JournalUnavailable,
    JournalVersionError,
    RunExists,
)
from loomgraph.runtime.schema import (
    ADDED_COLUMNS,
    SCHEMA_VERSION,
    WAITING_RUNS_INDEX,
    Dialect,
    audit_outbox_table,
    ddl,
    graphs_table,
    migrate_from_v1,
    v1_orphans,
    waiting_runs_index,
)
from loomgraph.runtime.sql_journal import Cursor, SqlJournal

T = TypeVar("T")


def dialect(schema: str) -> Dialect:
    """The Postgres flavour of the journal's SQL, with tables in `schema`."""
    return Dialect(
        prefix=quote_ident(schema) + ".",
        integer="BIGINT",
        real="DOUBLE PRECISION",
        json="json",
        serial="BIGSERIAL PRIMARY KEY",
        now="extract(epoch from clock_timestamp())::float8",
        share_lock=" FOR SHARE",
    )


class PostgresRuntime(SqlJournal):
    """A journal in PostgreSQL tables (in `schema`), shared by any number of workers.

    A pool of `pool_size` connections is opened on first use. Leases (`acquire_lease`) let
    one worker at a time advance a run; they expire by the database clock.

    `connect_timeout` bounds making a connection and `command_timeout` every statement
    (seconds): a server that is gone or does not answer raises `JournalUnavailable` within
    them instead of blocking the run (docs/runtime.md, "Postgres outages").
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        lease_seconds: float = 30.0,
        snapshot_every: int = 200,
        pool_size: int = 4,
        connect_timeout: float = 10.0,
        command_timeout: float = 15.0,
    ) -> None:
        if (problem := dsn_problem(dsn)) is not None:  # libpq's defaults are nobody's choice
            raise ValueError(f"PostgresRuntime: the dsn {problem}")
        checked_timeouts(connect_timeout, command_timeout)
        super().__init__(
            dialect(schema),
            describe_schema(dsn, schema),
            snapshot_every=snapshot_every,
            lease_seconds=lease_seconds,
        )
        self._pg = import_asyncpg("PostgresRuntime")
        self.dsn = dsn
        self.schema = schema
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        # Waiting for a pooled connection may mean making one, then a statement on it.
        self._pools = LoopPool(self._open, timeout=connect_timeout + command_timeout)

    def __repr__(self) -> str:
        return f"PostgresRuntime({describe_dsn(self.dsn)!r}, schema={self.schema!r})"

    # ------------------------------------------------------------------ lifecycle

    async def connect(self) -> None:
        """Connect, check and (when new) create the journal now rather than on first use."""
        await self._pools.get()

    async def holds_journal(self) -> bool:
        """Whether the schema holds a journal (its `journal_meta`), asked on a connection of
        its own that creates nothing: the pool's first connection would create the journal."""
        pg = self._pg
        failed = (OSError, pg.PostgresError, pg.InterfaceError)  # TimeoutError is an OSError
        try:
            con = await pg.connect(
                self.dsn, timeout=self.connect_timeout, command_timeout=self.command_timeout
            )
        except failed as err:
            raise self._setup_failed(err) from None
        try:
            table = f"{quote_ident(self.schema)}.journal_meta"
            return await con.fetchval("SELECT to_regclass($1)", table) is not None
        except failed as err:
            raise self._setup_failed(err) from None
        finally:
            await con.close(timeout=self.command_timeout)

    async def close(self) -> None:
        """Close the pool; the next use opens a new one."""
        await self._pools.close()

    @property
    def ledger_site(self) -> LedgerSite | None:
        """This database and schema, to keep a budget ledger in."""
        return PostgresSite(
            self.dsn,
            self.schema,
            connect_timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            pool_size=self.pool_size,
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """A pooled asyncpg connection inside one transaction, for what must commit or roll
        back together with the journal's own writes (a worker fleet's job rows); the
        connection's errors are translated as the journal's are."""
        async with self._write() as cur:
            yield cur.connection  # type: ignore[attr-defined]

    async def start_run_with(self, run: RunRecord, then: Callable[[Any], Awaitable[T]]) -> T:
        """Record a new run and, in the same transaction, `then(connection)`: either both
        commit or neither does (a fleet's submit journals a run and enqueues its job);
        `RunExists` when the id is journaled already."""
        async with self._write() as cur:
            if not await cur.execute(self._sql["start_run"], run_row(run, time.time())):
                raise RunExists(run.run_id)
            return await then(cur.connection)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ sessions

    def _read(self) -> AbstractAsyncContextManager[Cursor]:
        return self._cursor(transaction=False)

    def _write(self) -> AbstractAsyncContextManager[Cursor]:
        return self._cursor(transaction=True)

    def _cursor(self, *, transaction: bool) -> AbstractAsyncContextManager[Cursor]:
        return self._pools.cursor(
            transaction=transaction, translate=self._translate, pg=self._pg, constraints=True
        )

    def _translate(self, err: Exception) -> Exception:
        """A server that cannot do the work now (unreachable, shutting down, a statement or
        lock timeout of its own: `out_of_service`) is JournalUnavailable, a run stays to be
        resumed; missing tables are JournalCorrupted; anything else passes unchanged."""
        pg = self._pg
        if isinstance(err, pg.UndefinedTableError):
            return JournalCorrupted(self.location, str(err))
        why = out_of_service(pg, err, self.dsn, self.connect_timeout, self.command_timeout)
        return err if why is None else JournalUnavailable(self.location, why)

    # ------------------------------------------------------------------ opening

    async def _open(self) -> Any:
        """Connect; create the schema and tables when missing; refuse another schema version."""
        return await open_pool(
            self._pg,
            self.dsn,
            pool_size=self.pool_size,
            timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            lock=f"loomgraph.journal:{self.schema}",
            setup=self._setup,
            unavailable=lambda detail: JournalUnavailable(self.location, detail),
            translate=self._setup_failed,
        )

    async def _setup(self, con: Any) -> None:
        version = await self._version(con)
        if version not in (None, "1", str(SCHEMA_VERSION)):
            raise JournalVersionError(self.location, version, SCHEMA_VERSION)
        if version is None:
            await con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.schema)}")
            for statement in ddl(dialect(self.schema)):
                await con.execute(statement)
        d = dialect(self.schema)
        if await con.fetchval("SELECT to_regclass($1)", f"{d.prefix}graphs") is None:
            await con.execute(graphs_table(d))  # a journal made before graphs were kept
        if await con.fetchval("SELECT to_regclass($1)", f"{d.prefix}audit_outbox") is None:
            await con.execute(audit_outbox_table(d))  # ... or before the audit outbox
        for table, column, constraint in ADDED_COLUMNS:  # journals made before these
            # Checked first: ALTER TABLE locks the table even when the column exists.
            if not await con.fetchval(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = $1 "
                "AND table_name = $2 AND column_name = $3",
                self.schema,
                table,
                column,
            ):
                await con.execute(
                    f"ALTER TABLE {d.prefix}{table} ADD COLUMN IF NOT EXISTS {column} "
                    f"{d.integer} {constraint}"
                )
        if version == "1":
            # Setup is one transaction under the advisory lock: a failure leaves the
            # journal at version 1, and no other process migrates it meanwhile.
            orphans = await con.fetchval(v1_orphans(d))
            if orphans:
                raise JournalCorrupted(self.location, f"{orphans} rows of no run; not migrated")
            for statement in migrate_from_v1(d):
                await con.execute(statement)
        # Looked up first: CREATE INDEX locks the table even when the index exists.
        if await con.fetchval("SELECT to_regclass($1)", d.prefix + WAITING_RUNS_INDEX) is None:
            await con.execute(waiting_runs_index(d))

    def _setup_failed(self, err: Exception) -> Exception:
        pg = self._pg
        if isinstance(err, pg.PostgresError | OSError | pg.InterfaceError):
            return JournalUnavailable(self.location, failure(self.dsn, err))
        return err

    async def _version(self, con: Any) -> str | None:
        table = f"{quote_ident(self.schema)}.journal_meta"
        if await con.fetchval("SELECT to_regclass($1)", table) is None:
            return None
        value: str | None = await con.fetchval(
            f"SELECT value FROM {table} WHERE key = 'schema_version'"
        )
        return value
