"""Making an aiosqlite connection and setting it up: autocommit, busy timeout, durability, DDL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Literal

import aiosqlite

from loomgraph._storage.seconds import checked_seconds
from loomgraph._storage.sqlite_held import GuardedConnection

# SQLite's `synchronous` levels loomgraph uses with WAL: at NORMAL a commit survives the
# process's death; at FULL also a power cut, at the cost of an fsync per commit.
Synchronous = Literal["NORMAL", "FULL"]


def checked_synchronous(level: Synchronous) -> Synchronous:
    """`level`, or ValueError when it is not one of the two."""
    if level not in ("NORMAL", "FULL"):
        raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', not {level!r}")
    return level


# SQLite keeps busy_timeout as an int of milliseconds: beyond that int, or under one
# millisecond, it would silently never wait for another connection's lock.
MAX_BUSY_TIMEOUT = (2**31 - 1) / 1000


def checked_busy_timeout(busy_timeout: Any, *, error: type[ValueError] = ValueError) -> float:
    """`busy_timeout` as seconds, or `error` naming it (`seconds.checked_seconds`, the same
    rule as the Postgres backends' limits): from 1 ms to `MAX_BUSY_TIMEOUT`."""
    return checked_seconds(
        "busy_timeout", busy_timeout, error=error, least=0.001, most=MAX_BUSY_TIMEOUT
    )


async def connect_sqlite(path: str) -> aiosqlite.Connection:
    """A connection in autocommit mode (transactions are begun explicitly)."""
    conn = aiosqlite.connect(path, isolation_level=None, factory=GuardedConnection)
    # aiosqlite's worker thread is not a daemon: an unclosed store would keep the process
    # from exiting. Every write is committed when it returns, so nothing is lost.
    thread = getattr(conn, "_thread", None)
    if thread is not None:
        thread.daemon = True
    try:
        await conn
    except BaseException:
        # A file SQLite cannot open: aiosqlite stops its thread without waiting for it, and
        # a thread that ends after this event loop closed dies reporting to it.
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join, 5.0)
        raise
    return conn


async def execute_all(conn: aiosqlite.Connection, statements: Iterable[str]) -> None:
    """Run statements (tables, indexes) in one write transaction.

    Its `BEGIN IMMEDIATE` waits for another connection's write lock (busy_timeout) only when
    no earlier statement of `conn` is still unfinished: aiosqlite keeps a statement's cursor
    until the next statement has run, and a statement whose rows were not all read holds its
    read transaction that long — the BEGIN then upgrades it, and SQLite fails such an upgrade
    at once ("database is locked") rather than risk a deadlock. So every statement before
    this one that returns rows (a PRAGMA setting one too) is read with `execute_fetchall`.
    """
    await conn.execute("BEGIN IMMEDIATE")
    for statement in statements:
        await conn.execute(statement)
    await conn.execute("COMMIT")


async def set_busy_timeout(conn: aiosqlite.Connection, busy_timeout: float) -> None:
    """Wait up to `busy_timeout` seconds for another process's lock instead of failing."""
    # Its row is read, so the statement is finished before the next one (see execute_all).
    await conn.execute_fetchall(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
