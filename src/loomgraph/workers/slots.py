"""Per-user slots: at most K runs of one user advance at once, across the whole fleet.

Each of a user's K slots is a Postgres session advisory lock `(hash of schema and user, i)`.
A worker holds one, on a connection of its own, while it advances a run of that user. The
server releases a lock when its connection ends, so a SIGKILLed worker frees its slots as
soon as the kernel closes its sockets; a stopped (SIGSTOP) worker keeps them, which is right:
its run may still be inside a tool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loomgraph._storage.pg_pool import import_asyncpg

__all__ = ["Slot", "UserSlots"]


@dataclass(frozen=True, slots=True)
class Slot:
    """One held slot: the connection holding the lock and the lock's two keys."""

    connection: Any
    user_key: int
    index: int


class UserSlots:
    """The fleet's per-user limit, `limit` runs per user (0: no limit)."""

    def __init__(self, dsn: str, schema: str, limit: int, *, connections: int) -> None:
        if limit < 0:
            raise ValueError(f"the per-user limit must be >= 0, got {limit}")
        self.dsn = dsn
        self.schema = schema
        self.limit = limit
        self._connections = connections
        self._pool: Any = None

    async def _get_pool(self) -> Any:
        if self._pool is None:
            asyncpg = import_asyncpg("the fleet's per-user slots")
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=0, max_size=self._connections, timeout=10
            )
        return self._pool

    async def take(self, user_id: str | None) -> Slot | None:
        """A free slot of the user's, held until `release`; None when all K are taken (a run
        without a user, or no limit: a slot that holds nothing)."""
        if not self.limit or user_id is None:
            return Slot(None, 0, -1)
        pool = await self._get_pool()
        con = await pool.acquire()
        try:
            key = await con.fetchval("SELECT hashtext($1)", f"{self.schema}:{user_id}")
            for index in range(self.limit):
                if await con.fetchval("SELECT pg_try_advisory_lock($1, $2)", key, index):
                    return Slot(con, int(key), index)
        except BaseException:
            await pool.release(con)
            raise
        await pool.release(con)
        return None

    async def release(self, slot: Slot) -> None:
        """Give the slot back."""
        if slot.connection is None:
            return
        try:
            await slot.connection.execute(
                "SELECT pg_advisory_unlock($1, $2)", slot.user_key, slot.index
            )
        finally:
            await self._pool.release(slot.connection)

    async def close(self) -> None:
        """Close the connections (releasing any lock still held)."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
