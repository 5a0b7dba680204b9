"""What the server keeps and reads in the journal's database: API keys (hashed), and runs read
with the caller's user id (and the served agent's name) in the query, never filtered after.

`open_store` gives the store beside a journal: in its SQLite file or Postgres schema
(`sql_store`), or, for an in-memory journal, an in-memory store (development: nothing is
kept).
"""

from __future__ import annotations

import time
from typing import Protocol

from loomgraph.agent.checkpoints import may_go_on
from loomgraph.protocols import RunRecord, RunStatus, Runtime
from loomgraph.serve.api_keys import ApiKey, hash_key, key_id, new_key
from loomgraph.serve.run_pages import RunPage, cursor_position
from loomgraph.serve.sql_store import PostgresStore, SqliteStore

__all__ = ["MemoryStore", "ServeStore", "open_store"]


class ServeStore(Protocol):
    """Keys and per-user run reads."""

    async def add_key(self, user_id: str, *, approver: bool = False, label: str = "") -> str:
        """Store a new key's hash; the key itself, shown once."""
        ...

    async def key(self, key: str) -> ApiKey | None:
        """Who a key authenticates, or None."""
        ...

    async def keys(self) -> list[ApiKey]:
        """Every stored key (never the key itself: its id), oldest first."""
        ...

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Delete the key with this id; what it was, or None when there is none. A revoked
        key is refused from the next request on (nothing is cached)."""
        ...

    async def run(self, run_id: str, user_id: str, *, agent: str | None = None) -> RunRecord | None:
        """The run when it is this user's and, with `agent`, one an Agent of that name may
        go on with (`checkpoints.may_go_on`), else None."""
        ...

    async def runs(
        self,
        user_id: str,
        *,
        status: RunStatus | None = None,
        graph: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        agent: str | None = None,
    ) -> RunPage:
        """A page of this user's runs (with `agent`, of those of that agent), newest first."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MemoryStore:
    """The store of an in-memory journal: keys in a dict, runs read from the journal."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._keys: dict[str, ApiKey] = {}

    async def add_key(self, user_id: str, *, approver: bool = False, label: str = "") -> str:
        """Keep a new key's hash; the key."""
        key = new_key()
        hashed = hash_key(key)
        self._keys[hashed] = ApiKey(user_id, approver, label, key_id(hashed), time.time())
        return key

    async def key(self, key: str) -> ApiKey | None:
        """Who a key authenticates, or None."""
        return self._keys.get(hash_key(key))

    async def keys(self) -> list[ApiKey]:
        """Every kept key, oldest first."""
        return list(self._keys.values())

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Forget the key with this id; what it was."""
        for hashed, found in list(self._keys.items()):
            if found.key_id == key_id:
                return self._keys.pop(hashed)
        return None

    async def run(self, run_id: str, user_id: str, *, agent: str | None = None) -> RunRecord | None:
        """The run when it is this user's (and the agent's)."""
        for record in await self._runtime.runs(user_id):
            if record.run_id == run_id:
                return record if agent is None or may_go_on(record.agent_name, agent) else None
        return None

    async def runs(
        self,
        user_id: str,
        *,
        status: RunStatus | None = None,
        graph: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        agent: str | None = None,
    ) -> RunPage:
        """A page of this user's runs, newest first (the cursor is a position)."""
        rows = list(reversed(await self._runtime.runs(user_id)))
        rows = [
            r
            for r in rows
            if (status is None or r.status == status)
            and (graph is None or r.graph_name == graph)
            and (agent is None or may_go_on(r.agent_name, agent))
        ]
        start = cursor_position(cursor) if cursor else 0
        page = rows[start : start + limit]
        more = start + limit < len(rows)
        return RunPage(page, str(start + limit) if more else None)

    async def close(self) -> None:
        """Nothing to release."""


def open_store(runtime: Runtime) -> ServeStore:
    """The store beside a journal: in its SQLite file or Postgres schema, else in memory."""
    path = getattr(runtime, "path", None)
    if isinstance(path, str) and path != ":memory:" and hasattr(runtime, "ledger_site"):
        return SqliteStore(path)
    dsn, schema = getattr(runtime, "dsn", None), getattr(runtime, "schema", None)
    if isinstance(dsn, str) and isinstance(schema, str):
        return PostgresStore(dsn, schema)
    return MemoryStore(runtime)
