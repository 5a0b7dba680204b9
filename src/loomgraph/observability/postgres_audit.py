"""The keyed, hash-chained audit log in PostgreSQL, on asyncpg (an optional dependency)."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from loomgraph._storage.dsn import describe_dsn
from loomgraph._storage.pg_pool import (
    LoopPool,
    checked_timeouts,
    failure,
    import_asyncpg,
    open_pool,
    out_of_service,
)

from .audit_chain import (
    EMPTY_HEAD,
    UNSIGNED_FIELD,
    AuditEntry,
    AuditHead,
    AuditLogError,
    AuditLogUnavailable,
    VerifyResult,
    chain_entries,
    dumps,
    entry_hash,
    normalize_payload,
    parse_entry,
)
from .audit_key import resolve_audit_key
from .audit_verify import ChainVerifier
from .content_flag import content_flag
from .pg_audit_rows import COLUMNS, LOCK_SQL, column_problem, unstorable

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class PostgresAuditLog:
    """The same hash chain as FileAuditLog, kept in a PostgreSQL table.

    Appends run in a transaction holding a transaction-level advisory lock derived from
    the table as the server resolves its name, so every process writing to the table
    extends one chain, however it spells the name. The first append creates the table when
    it is missing; reading a missing table raises `AuditLogError` (a missing table is not
    an empty log), and nothing but that append needs more than INSERT and SELECT on it.
    The pool is opened on first use in each event loop; call `close()` when done.

    `connect_timeout` bounds making a connection and `command_timeout` every statement
    (seconds), as `PostgresRuntime`'s do: a server that refuses, drops the connection or
    does not answer raises `AuditLogUnavailable` (a `ServiceUnavailable`, naming the server
    without its password) within them. An entry PostgreSQL cannot store (a NUL character,
    NaN or Infinity) raises `AuditLogError` before anything is sent.
    """

    def __init__(
        self,
        dsn: str,
        key: bytes | str | None = None,
        table: str = "loom_audit",
        *,
        key_file: str | os.PathLike[str] | None = None,
        key_env: str | None = None,
        unsigned: bool = False,
        capture_content: bool = False,
        min_size: int = 1,
        max_size: int = 4,
        connect_timeout: float = 10.0,
        command_timeout: float = 15.0,
    ) -> None:
        """A log in `table` (or `schema.table`) at `dsn`, keyed and capturing content as
        FileAuditLog does; at most `max_size` connections (`min_size` is accepted for
        compatibility: the pool opens one connection and grows on demand)."""
        parts = table.split(".")
        if len(parts) > 2 or not all(_IDENT.fullmatch(p) for p in parts):
            raise ValueError(f"invalid table name {table!r}: use name or schema.name")
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError("need 0 <= min_size <= max_size and max_size >= 1")
        checked_timeouts(connect_timeout, command_timeout)
        self._dsn = dsn
        self._key = resolve_audit_key(key, key_file=key_file, key_env=key_env, unsigned=unsigned)
        self.capture_content = content_flag(capture_content)
        self._table = ".".join(f'"{p}"' for p in parts)
        self._index = f'"{parts[-1]}_run_id_idx"'
        # What `LOCK_SQL` resolves the table from: its schema (None: the search path's) and name.
        self._lock_args = (self._table, parts[0] if len(parts) == 2 else None, parts[-1])
        # Set once an append found (or made) the table: one that vanishes after is an
        # error, never made anew under a chain that would start over at seq 1.
        self._had_table = False
        self._pool_size = max_size
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.location = f"{describe_dsn(dsn)} (table {table})"  # as errors name it
        self._pg: Any = None  # asyncpg, imported on first use (an optional dependency)
        # Waiting for a pooled connection may mean making one, then a statement on it.
        self._pools = LoopPool(self._open, timeout=connect_timeout + command_timeout)

    def __repr__(self) -> str:
        return f"PostgresAuditLog({describe_dsn(self._dsn)!r}, table={self._table!r})"

    @property
    def table(self) -> str:
        """The quoted, possibly schema-qualified table name."""
        return self._table

    # ----------------------------------------------------------------------- lifecycle

    async def _open(self) -> Any:
        """Connect (nothing is created: see `_create_table`); AuditLogUnavailable when
        unreachable."""
        if self._pg is None:
            self._pg = import_asyncpg("PostgresAuditLog")
        return await open_pool(
            self._pg,
            self._dsn,
            pool_size=self._pool_size,
            timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            setup=_nothing,
            unavailable=lambda detail: AuditLogUnavailable(self.location, detail),
            translate=self._translate,
        )

    def _translate(self, err: Exception) -> Exception:
        """A server that cannot be reached (or ended the work for a reason of its own) as
        AuditLogUnavailable, any other driver error as AuditLogError (the password masked);
        loomgraph's own errors unchanged."""
        pg = self._pg
        why = out_of_service(pg, err, self._dsn, self.connect_timeout, self.command_timeout)
        if why is not None:
            return AuditLogUnavailable(self.location, why)
        if isinstance(err, pg.UndefinedTableError):
            return AuditLogError(
                f"audit log {self.location}: the table does not exist "
                f"({failure(self._dsn, err)}); a missing table is not an empty log"
            )
        if isinstance(err, pg.PostgresError):
            return AuditLogError(f"audit log {self.location}: {failure(self._dsn, err)}")
        return err

    async def _create_table(self, conn: Any) -> None:
        """Create the table and its index, under the append lock (so concurrent creators do
        not collide in the catalog), when it is still missing: only an append that never
        found it does this, so a role granted INSERT and SELECT alone can use a table made
        beforehand."""
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", self._table):
            return  # made by another writer while this one waited for the lock
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {self._table} (
                seq bigint PRIMARY KEY,
                time double precision NOT NULL,
                run_id text NOT NULL,
                user_id text,
                actor text NOT NULL,
                action text NOT NULL,
                payload jsonb NOT NULL,
                prev_hash text NOT NULL,
                hash text NOT NULL,
                line text NOT NULL
            )"""
        )
        await conn.execute(
            f"CREATE INDEX IF NOT EXISTS {self._index} ON {self._table} (run_id, seq)"
        )

    async def close(self) -> None:
        """Close the connection pool (bounded: a server that does not answer is dropped)."""
        await self._pools.close()

    async def __aenter__(self) -> PostgresAuditLog:
        """Open the pool (the first append creates the table when it is missing)."""
        await self._pools.get()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the pool."""
        await self.close()

    # ----------------------------------------------------------------------- writing

    async def record(
        self,
        action: str,
        *,
        run_id: str,
        user_id: str | None,
        actor: str,
        payload: Mapping[str, Any],
    ) -> None:
        """Append one entry; it is committed when this returns."""
        await self.append(action, run_id=run_id, user_id=user_id, actor=actor, payload=payload)

    async def record_many(
        self,
        entries: Sequence[tuple[str, str, Mapping[str, Any]]],
        *,
        run_id: str,
        user_id: str | None,
    ) -> None:
        """Append several entries of one run, (action, actor, payload) each, in order, in one
        transaction (a run's `AuditWriter` hands over what queued up meanwhile)."""
        await self.append_many(entries, run_id=run_id, user_id=user_id)

    async def append(
        self,
        action: str,
        *,
        run_id: str,
        user_id: str | None,
        actor: str,
        payload: Mapping[str, Any],
    ) -> AuditEntry:
        """Append one entry and return it as stored (committed when this returns)."""
        [entry] = await self.append_many([(action, actor, payload)], run_id=run_id, user_id=user_id)
        return entry

    async def append_many(
        self,
        entries: Sequence[tuple[str, str, Mapping[str, Any]]],
        *,
        run_id: str,
        user_id: str | None,
    ) -> list[AuditEntry]:
        """Append (action, actor, payload) entries in order, in one transaction; them as
        stored (committed when this returns). One that cannot be stored refuses them all."""
        bodies = []
        for action, actor, payload in entries:
            body = normalize_payload(payload)
            fields = {"run_id": run_id, "user_id": user_id, "actor": actor, "action": action}
            problem = unstorable(fields, body)
            if problem is not None:
                raise AuditLogError(f"PostgreSQL cannot store this audit entry: {problem}")
            bodies.append((action, actor, body))
        async with self._transaction() as conn:
            present = await conn.fetchval(LOCK_SQL, *self._lock_args, column=1)
            if not present and not self._had_table:
                await self._create_table(conn)
            row = await conn.fetchrow(
                f"SELECT seq, hash, line FROM {self._table} ORDER BY seq DESC LIMIT 1"
            )
            head = EMPTY_HEAD if row is None else self._chainable(row)
            made = chain_entries(head, bodies, run_id=run_id, user_id=user_id, key=self._key)
            await conn.executemany(
                f"INSERT INTO {self._table} ({', '.join(COLUMNS)}, line) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10)",
                [
                    (
                        e["seq"],
                        e["time"],
                        e["run_id"],
                        e["user_id"],
                        e["actor"],
                        e["action"],
                        dumps(e["payload"]),
                        e["prev_hash"],
                        e["hash"],
                        dumps(e),
                    )
                    for e in made
                ],
            )
        self._had_table = True
        return made

    @asynccontextmanager
    async def _transaction(self, **options: Any) -> AsyncIterator[Any]:
        """A pooled connection in a transaction (`readonly`, `isolation`), errors translated.
        Work cut off drops the connection rather than wait for a ROLLBACK a server that
        stopped answering would keep a cancelled append waiting on (`LoopPool.cursor`)."""
        async with self._pools.cursor(translate=self._translate, **options) as cur:
            yield cur.connection

    def _chainable(self, row: Any) -> AuditHead:
        """The head to chain onto, refusing a last row this key cannot verify."""
        try:
            last = parse_entry(row["line"])
        except ValueError as exc:
            raise AuditLogError(f"the last entry of {self._table} is malformed: {exc}") from None
        signed_ok = (UNSIGNED_FIELD in last) == (self._key is None)
        mac = entry_hash(last, self._key)
        if not signed_ok or mac != last["hash"] or mac != row["hash"]:
            raise AuditLogError(
                f"the last entry of {self._table} does not verify with this key "
                "(wrong key, or the entry was edited)"
            )
        return AuditHead(row["seq"], row["hash"])

    # ----------------------------------------------------------------------- reading

    async def head(self) -> AuditHead:
        """The (seq, hash) of the last entry; `(0, GENESIS_HASH)` when empty."""
        async with self._pools.cursor(transaction=False, translate=self._translate) as cur:
            row = await cur.connection.fetchrow(
                f"SELECT seq, hash FROM {self._table} ORDER BY seq DESC LIMIT 1"
            )
        return EMPTY_HEAD if row is None else AuditHead(row["seq"], row["hash"])

    async def entries(self, *, run_id: str | None = None) -> AsyncIterator[AuditEntry]:
        """Every entry in seq order (only one run's with `run_id`); not verified.

        Raises AuditLogError at a malformed entry, after yielding those before it.
        """
        where, args = ("WHERE run_id = $1", [run_id]) if run_id is not None else ("", [])
        async with self._transaction(readonly=True) as conn:
            query = f"SELECT seq, line FROM {self._table} {where} ORDER BY seq"
            async for row in conn.cursor(query, *args, prefetch=500):
                try:
                    entry = parse_entry(row["line"])
                except ValueError as exc:
                    raise AuditLogError(
                        f"malformed entry {row['seq']} in {self._table}: {exc}"
                    ) from None
                yield entry

    async def verify(self, expected_head: tuple[int, str] | None = None) -> VerifyResult:
        """Check the whole chain, that the query columns match it, and the recorded head."""
        verifier = ChainVerifier(self._key, expected_head)
        async with self._transaction(isolation="repeatable_read", readonly=True) as conn:
            query = f"SELECT {', '.join(COLUMNS)}, line FROM {self._table} ORDER BY seq"
            async for row in conn.cursor(query, prefetch=500):
                verifier.feed(row["line"], check=partial(column_problem, row))
                if verifier.failed:
                    break
        return verifier.result()


async def _nothing(conn: Any) -> None:
    """A pool's setup: nothing (the table is created by the first append that misses it)."""
