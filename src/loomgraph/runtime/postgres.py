"""`PostgresRuntime`: the durable journal in PostgreSQL, for many processes on many machines.

asyncpg is imported when a PostgresRuntime is made, so importing loomgraph without the
`postgres` extra still works.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from loomgraph._storage.dsn import describe_dsn
from loomgraph._storage.pg_pool import LoopPool
from loomgraph.runtime.codec import SCHEMA_VERSION, Dialect, ddl
from loomgraph.runtime.errors import JournalCorrupted, JournalUnavailable, JournalVersionError
from loomgraph.runtime.sql_journal import Constraint, Cursor, SqlJournal


def _asyncpg() -> Any:
    try:
        import asyncpg  # type: ignore[import-untyped,unused-ignore]
    except ImportError as err:
        raise ImportError(
            "PostgresRuntime needs asyncpg: pip install 'loomgraph[postgres]'"
        ) from err
    return asyncpg


def dialect(schema: str) -> Dialect:
    """The Postgres flavour of the journal's SQL, with tables in `schema`."""
    return Dialect(
        prefix=_ident(schema) + ".",
        integer="BIGINT",
        real="DOUBLE PRECISION",
        json="json",
        serial="BIGSERIAL PRIMARY KEY",
        now="extract(epoch from clock_timestamp())::float8",
    )


class _PgCursor:
    """Runs statements on one pooled connection, with constraint errors translated."""

    def __init__(self, con: Any, pg: Any) -> None:
        self._con = con
        self._pg = pg

    async def execute(self, sql: str, args: Sequence[Any]) -> int:
        """Run one statement; the number of rows it changed."""
        try:
            status: str = await self._con.execute(sql, *args)
        except self._pg.ForeignKeyViolationError as err:
            raise Constraint("foreign_key", str(err)) from None
        except self._pg.UniqueViolationError as err:
            raise Constraint("unique", str(err)) from None
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def fetch(self, sql: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        """Run one query; its rows."""
        rows: list[Sequence[Any]] = await self._con.fetch(sql, *args)
        return rows


class PostgresRuntime(SqlJournal):
    """A journal in PostgreSQL tables (in `schema`), shared by any number of workers.

    A pool of `pool_size` connections is opened on first use. Leases (`acquire_lease`) let
    one worker at a time advance a run; they expire by the database clock.
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
    ) -> None:
        super().__init__(
            dialect(schema),
            f"{describe_dsn(dsn)} (schema {schema!r})",
            snapshot_every=snapshot_every,
            lease_seconds=lease_seconds,
        )
        self._pg = _asyncpg()
        self.dsn = dsn
        self.schema = schema
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self._sql = {name: _numbered(sql) for name, sql in self._sql.items()}
        self._pools = LoopPool(self._open)

    def __repr__(self) -> str:
        return f"PostgresRuntime({describe_dsn(self.dsn)!r}, schema={self.schema!r})"

    # ------------------------------------------------------------------ lifecycle

    async def connect(self) -> None:
        """Connect, check and (when new) create the journal now rather than on first use."""
        await self._pools.get()

    async def close(self) -> None:
        """Close the pool; the next use opens a new one."""
        await self._pools.close()

    # ------------------------------------------------------------------ sessions

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[Cursor]:
        pool = await self._pools.get()
        try:
            async with pool.acquire() as con:
                yield _PgCursor(con, self._pg)
        except Exception as err:
            translated = self._translate(err)
            if translated is err:
                raise
            raise translated from None

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[Cursor]:
        pool = await self._pools.get()
        try:
            async with pool.acquire() as con, con.transaction():
                yield _PgCursor(con, self._pg)
        except Exception as err:
            translated = self._translate(err)
            if translated is err:
                raise
            raise translated from None

    def _translate(self, err: Exception) -> Exception:
        """Connection failures become JournalUnavailable; anything else passes unchanged."""
        pg = self._pg
        if isinstance(err, pg.UndefinedTableError):
            return JournalCorrupted(self.location, str(err))
        if isinstance(
            err,
            OSError
            | TimeoutError
            | pg.InterfaceError
            | pg.PostgresConnectionError
            | pg.CannotConnectNowError
            | pg.TooManyConnectionsError,
        ):
            return JournalUnavailable(self.location, self._scrub(f"{type(err).__name__}: {err}"))
        return err

    def _scrub(self, text: str) -> str:
        with contextlib.suppress(ValueError):
            password = urlsplit(self.dsn).password
            if password:
                text = text.replace(password, "***")
        return text

    # ------------------------------------------------------------------ opening

    async def _open(self) -> Any:
        """Connect; create the schema and tables when missing; refuse another schema version."""
        pg = self._pg
        try:
            pool = await pg.create_pool(
                self.dsn, min_size=1, max_size=self.pool_size, timeout=self.connect_timeout
            )
        except (OSError, TimeoutError, ValueError, pg.PostgresError, pg.InterfaceError) as err:
            raise JournalUnavailable(
                self.location, self._scrub(f"{type(err).__name__}: {err}")
            ) from None
        try:
            async with pool.acquire() as con, con.transaction():
                # Workers starting together must not race on CREATE TABLE IF NOT EXISTS.
                await con.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1))", f"loomgraph.journal:{self.schema}"
                )
                version = await self._version(con)
                if version is not None and version != str(SCHEMA_VERSION):
                    raise JournalVersionError(self.location, version, SCHEMA_VERSION)
                if version is None:
                    await con.execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(self.schema)}")
                    for statement in ddl(dialect(self.schema)):
                        await con.execute(statement)
        except BaseException as err:
            pool.terminate()
            if isinstance(err, pg.PostgresError | OSError | pg.InterfaceError):
                raise JournalUnavailable(self.location, self._scrub(str(err))) from None
            raise
        return pool

    async def _version(self, con: Any) -> str | None:
        table = f"{_ident(self.schema)}.journal_meta"
        if await con.fetchval("SELECT to_regclass($1)", table) is None:
            return None
        value: str | None = await con.fetchval(
            f"SELECT value FROM {table} WHERE key = 'schema_version'"
        )
        return value


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _numbered(sql: str) -> str:
    """`?` placeholders as asyncpg's `$1, $2, …` (the journal's SQL has no literal `?`)."""
    count = iter(range(1, sql.count("?") + 1))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)
