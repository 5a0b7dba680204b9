"""Per-user slots: at most K runs of one user advance at once, across the whole fleet.

Each of a user's K slots is a Postgres session advisory lock keyed by 64 bits of SHA-256 of
the schema, the slot's number and the user id (`slot_key`; Postgres's 32-bit `hashtext` let
two users share slots, one choosing an id that collides with the other's). Runs without a
user are limited as one user (as the budget counts them), under a key no user id can give.
A worker holds one, on a connection of its own, while it advances a run of that user. The
server releases a lock when its connection ends: a SIGKILLed worker's sockets are closed by
its kernel at once, and a stopped or cut-off worker's sessions are ended by the server after
`expire_seconds` of silence (`idle_session_timeout`, PostgreSQL 14+), which a live worker
never reaches: it pings every held connection three times as often. So a stopped worker does
not keep its users' slots (and their runs) for ever; what it was doing when it stopped is
then outside the count, like everything a worker does after losing a run's lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from loomgraph._storage.lock_keys import advisory_key
from loomgraph._storage.pg_pool import connection_failed, failure, import_asyncpg
from loomgraph.errors import ServiceUnavailable

__all__ = ["Slot", "SlotsUnavailable", "UserSlots", "slot_key"]

log = logging.getLogger("loomgraph.workers")


class SlotsUnavailable(ServiceUnavailable):
    """A per-user slot could not be looked at: its connection could not be made or broke
    (Postgres refusing connections, at `max_connections`, or the network). Like any
    `ServiceUnavailable`, the job is put back and the run goes on later."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the per-user slots are unavailable: {detail}")
        self.detail = detail


def slot_key(schema: str, user_id: str | None, index: int) -> int:
    """The advisory lock key of slot `index` of a user (None: runs without a user)."""
    # As JSON, no two (schema, index, user) give one name, whatever their characters, and
    # runs without a user are `null`, which no user id (a string) can give.
    return advisory_key("loomgraph.slots:" + json.dumps([schema, index, user_id]))


@dataclass(frozen=True, slots=True)
class Slot:
    """One held slot: the connection holding the lock, the lock's key and the slot's number."""

    connection: Any
    key: int
    index: int


class UserSlots:
    """The fleet's per-user limit, `limit` runs per user (0: no limit)."""

    def __init__(
        self, dsn: str, schema: str, limit: int, *, connections: int, expire_seconds: float
    ) -> None:
        if limit < 0:
            raise ValueError(f"the per-user limit must be >= 0, got {limit}")
        self.dsn = dsn
        self.schema = schema
        self.limit = limit
        self.expire_seconds = expire_seconds
        self._connections = connections
        self._pool: Any = None
        self._held: set[Slot] = set()
        self._keeper: asyncio.Task[None] | None = None
        # A connection runs one statement at a time: the keeper's pings and the unlocks.
        self._io = asyncio.Lock()

    async def _get_pool(self) -> Any:
        if self._pool is None:
            asyncpg = import_asyncpg("the fleet's per-user slots")
            idle_ms = max(1000, int(self.expire_seconds * 1000))
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=0,
                max_size=self._connections,
                timeout=10,
                # Idle pooled connections are closed before the server would end them.
                max_inactive_connection_lifetime=self.expire_seconds / 2,
                server_settings={"idle_session_timeout": str(idle_ms)},
            )
            self._keeper = asyncio.create_task(self._keep())
        return self._pool

    async def _keep(self) -> None:
        """Ping every held slot's connection well within `expire_seconds`."""
        while True:
            await asyncio.sleep(self.expire_seconds / 3)
            async with self._io:
                for slot in list(self._held):
                    try:
                        await slot.connection.execute("SELECT 1")
                    except Exception as err:  # the slot is gone; the run goes on (its lease)
                        self._held.discard(slot)
                        log.warning("a per-user slot's connection failed: %s", err)

    async def take(self, user_id: str | None) -> Slot | None:
        """A free slot of the user's (None: of runs without a user, limited as one user),
        held until `release`; None when all K are taken (no limit: a slot holding nothing)."""
        if not self.limit:
            return Slot(None, 0, -1)
        try:
            pool = await self._get_pool()
            con = await pool.acquire()
        except Exception as err:
            if (unavailable := self._unavailable(err)) is None:
                raise
            raise unavailable from err
        try:
            for index in range(self.limit):
                key = slot_key(self.schema, user_id, index)
                if await con.fetchval("SELECT pg_try_advisory_lock($1::bigint)", key):
                    slot = Slot(con, key, index)
                    self._held.add(slot)
                    return slot
        except BaseException as err:
            await self._give_back(con)
            if isinstance(err, Exception) and (unavailable := self._unavailable(err)):
                raise unavailable from err
            raise
        await self._give_back(con)
        return None

    def _unavailable(self, err: Exception) -> SlotsUnavailable | None:
        """`SlotsUnavailable` when `err` says a connection could not be made or broke."""
        if connection_failed(import_asyncpg("the fleet's per-user slots"), err):
            return SlotsUnavailable(failure(self.dsn, err))
        return None

    async def _give_back(self, con: Any) -> None:
        """Return a connection to the pool; a broken one is closed by it (a failure to is
        logged: the server ends the session, and its locks, when its socket closes)."""
        try:
            await self._pool.release(con)
        except Exception as err:
            log.warning("a per-user slot's connection could not be given back: %s", err)

    async def release(self, slot: Slot) -> None:
        """Give the slot back (a slot whose connection failed is free already)."""
        if slot.connection is None:
            return
        async with self._io:
            self._held.discard(slot)
            try:
                await slot.connection.execute("SELECT pg_advisory_unlock($1::bigint)", slot.key)
            except Exception as err:
                log.warning("a per-user slot could not be unlocked: %s", err)
            finally:
                await self._give_back(slot.connection)

    async def close(self) -> None:
        """Close the connections (releasing any lock still held)."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
