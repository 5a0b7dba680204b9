"""The one `Cursor` every SQL backend's shared logic runs its statements through, and the two
implementations: on an aiosqlite connection and on an asyncpg connection.

Statements are written with `?` placeholders; the Postgres cursor numbers them (`$1, $2, …`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal, Protocol

import aiosqlite

from loomgraph._storage.sqlite_errors import sqlite_error_name


class Cursor(Protocol):
    """Statements inside one session or transaction of a backend."""

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        """Run one query; its rows."""
        ...


class Constraint(Exception):
    """A unique or foreign-key violation, from a cursor made with `constraints=True`."""

    def __init__(self, kind: Literal["unique", "foreign_key"], detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


_SQLITE_UNIQUE = ("SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE")


class SqliteCursor:
    """Runs statements on an aiosqlite connection."""

    def __init__(self, conn: aiosqlite.Connection, *, constraints: bool = False) -> None:
        self._conn = conn
        self._constraints = constraints

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        try:
            cursor = await self._conn.execute(sql, args)
        except sqlite3.IntegrityError as err:
            raise_constraint(err, self._constraints)
            raise
        return cursor.rowcount

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        """Run one query; its rows."""
        return list(await self._conn.execute_fetchall(sql, args))


def raise_constraint(err: sqlite3.IntegrityError, constraints: bool) -> None:
    """Raise the `Constraint` `err` stands for, when asked to (`constraints`) and it is one."""
    constraint = sqlite_constraint(err) if constraints else None
    if constraint is not None:
        raise constraint from None


def sqlite_constraint(err: sqlite3.IntegrityError) -> Constraint | None:
    """The `Constraint` a unique or foreign-key violation stands for, or None."""
    name = sqlite_error_name(err)
    if name == "SQLITE_CONSTRAINT_FOREIGNKEY":
        return Constraint("foreign_key", str(err))
    if name in _SQLITE_UNIQUE:
        return Constraint("unique", str(err))
    return None


@lru_cache(maxsize=512)
def numbered(sql: str) -> str:
    """`?` placeholders as asyncpg's `$1, $2, …` (the shared SQL has no literal `?`)."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))


class PgCursor:
    """Runs `?`-placeholder statements on an asyncpg connection."""

    def __init__(self, con: Any, pg: Any = None, *, constraints: bool = False) -> None:
        self._con = con
        self._pg = pg  # the asyncpg module, needed with `constraints`
        self._constraints = constraints

    @property
    def connection(self) -> Any:
        """The asyncpg connection (inside the cursor's transaction, if it has one)."""
        return self._con

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        try:
            status: str = await self._con.execute(numbered(sql), *args)
        except Exception as err:
            if self._constraints and isinstance(err, self._pg.ForeignKeyViolationError):
                raise Constraint("foreign_key", str(err)) from None
            if self._constraints and isinstance(err, self._pg.UniqueViolationError):
                raise Constraint("unique", str(err)) from None
            raise
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        """Run one query; its rows."""
        rows: list[Sequence[Any]] = await self._con.fetch(numbered(sql), *args)
        return rows
