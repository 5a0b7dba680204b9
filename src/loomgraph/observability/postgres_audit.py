"""The keyed, hash-chained audit log in PostgreSQL, on asyncpg (an optional dependency)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from functools import partial
from typing import Any

from .audit_chain import (
    EMPTY_HEAD,
    UNSIGNED_FIELD,
    AuditEntry,
    AuditHead,
    AuditLogError,
    ChainVerifier,
    VerifyResult,
    dumps,
    entry_hash,
    make_entry,
    normalize_payload,
    parse_entry,
)
from .audit_key import resolve_audit_key

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

# Columns besides `line` duplicate the entry so it can be queried; `line` is the exact
# canonical text that was hashed, so verification never depends on how PostgreSQL
# normalises jsonb or floats.
_COLUMNS = ("seq", "time", "run_id", "user_id", "actor", "action", "payload", "prev_hash", "hash")


class PostgresAuditLog:
    """The same hash chain as FileAuditLog, kept in a PostgreSQL table.

    Appends run in a transaction holding a transaction-level advisory lock derived from
    the table name, so every process writing to the table extends one chain. The pool is
    created on first use and belongs to that event loop; call `close()` when done.
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
    ) -> None:
        """A log in `table` (or `schema.table`) at `dsn`, keyed and capturing content as
        FileAuditLog does."""
        parts = table.split(".")
        if len(parts) > 2 or not all(_IDENT.fullmatch(p) for p in parts):
            raise ValueError(f"invalid table name {table!r}: use name or schema.name")
        self._dsn = dsn
        self._key = resolve_audit_key(key, key_file=key_file, key_env=key_env, unsigned=unsigned)
        self.capture_content = capture_content
        self._table = ".".join(f'"{p}"' for p in parts)
        self._index = f'"{parts[-1]}_run_id_idx"'
        digest = hashlib.sha256(f"loomgraph.audit:{table}".encode()).digest()
        self._lock_key = int.from_bytes(digest[:8], "big", signed=True)
        self._sizes = (min_size, max_size)
        self._pool: Any = None  # asyncpg.Pool; asyncpg ships no type information
        self._ready = False
        self._setup_lock: asyncio.Lock | None = None

    @property
    def table(self) -> str:
        """The quoted, possibly schema-qualified table name."""
        return self._table

    # ----------------------------------------------------------------------- lifecycle

    async def _get_pool(self) -> Any:
        if self._pool is not None and self._ready:
            return self._pool
        if self._setup_lock is None:
            self._setup_lock = asyncio.Lock()
        async with self._setup_lock:
            if self._pool is None:
                try:
                    import asyncpg  # type: ignore[import-untyped]  # imported lazily: optional
                except ImportError as exc:  # pragma: no cover - depends on the install
                    raise ImportError(
                        "PostgresAuditLog needs asyncpg: pip install 'loomgraph[postgres]'"
                    ) from exc
                self._pool = await asyncpg.create_pool(
                    self._dsn, min_size=self._sizes[0], max_size=self._sizes[1]
                )
            if not self._ready:
                await self._create_table(self._pool)
                self._ready = True
        return self._pool

    async def _create_table(self, pool: Any) -> None:
        async with pool.acquire() as conn, conn.transaction():
            # Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog;
            # the append lock serialises creators too.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key)
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
        """Close the connection pool."""
        pool, self._pool, self._ready = self._pool, None, False
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> PostgresAuditLog:
        """Open the pool and make sure the table exists."""
        await self._get_pool()
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

    async def append(
        self,
        action: str,
        *,
        run_id: str,
        user_id: str | None,
        actor: str,
        payload: Mapping[str, Any],
    ) -> AuditEntry:
        """Append one entry and return it as stored."""
        body = normalize_payload(payload)
        pool = await self._get_pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key)
            row = await conn.fetchrow(
                f"SELECT seq, hash, line FROM {self._table} ORDER BY seq DESC LIMIT 1"
            )
            head = EMPTY_HEAD if row is None else self._chainable(row)
            entry = make_entry(
                seq=head.seq + 1,
                prev_hash=head.hash,
                at=time.time(),
                action=action,
                run_id=run_id,
                user_id=user_id,
                actor=actor,
                payload=body,
                key=self._key,
            )
            await conn.execute(
                f"INSERT INTO {self._table} ({', '.join(_COLUMNS)}, line) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10)",
                entry["seq"],
                entry["time"],
                entry["run_id"],
                entry["user_id"],
                entry["actor"],
                entry["action"],
                dumps(entry["payload"]),
                entry["prev_hash"],
                entry["hash"],
                dumps(entry),
            )
        return entry

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
        pool = await self._get_pool()
        row = await pool.fetchrow(f"SELECT seq, hash FROM {self._table} ORDER BY seq DESC LIMIT 1")
        return EMPTY_HEAD if row is None else AuditHead(row["seq"], row["hash"])

    async def entries(self, *, run_id: str | None = None) -> AsyncIterator[AuditEntry]:
        """Every entry in seq order (only one run's with `run_id`); not verified."""
        pool = await self._get_pool()
        where, args = ("WHERE run_id = $1", [run_id]) if run_id is not None else ("", [])
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            query = f"SELECT line FROM {self._table} {where} ORDER BY seq"
            async for row in conn.cursor(query, *args, prefetch=500):
                yield parse_entry(row["line"])

    async def verify(self, expected_head: tuple[int, str] | None = None) -> VerifyResult:
        """Check the whole chain, that the query columns match it, and the recorded head."""
        verifier = ChainVerifier(self._key, expected_head)
        pool = await self._get_pool()
        async with (
            pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            query = f"SELECT {', '.join(_COLUMNS)}, line FROM {self._table} ORDER BY seq"
            async for row in conn.cursor(query, prefetch=500):
                verifier.feed(row["line"], check=partial(_column_problem, row))
                if verifier.failed:
                    break
        return verifier.result()


def _column_problem(row: Any, entry: AuditEntry) -> str | None:
    """Which query column disagrees with the hashed line, if any."""
    for name in _COLUMNS:
        value = row[name]
        if name == "payload":
            value = json.loads(value)
        if value != entry[name]:  # type: ignore[literal-required]  # names from _COLUMNS
            return f"column {name!r} of entry {entry['seq']} differs from the hashed entry (edited)"
    return None
