"""What the server keeps and reads in the journal's database: API keys (hashed), and runs read
with the caller's user id (and the served agent's name) in the query, never filtered after.

`open_store` gives the store beside a journal: in its SQLite file or Postgres schema
(`sql_store`), or, for an in-memory journal, an in-memory store (development: nothing is
kept).
"""

from __future__ import annotations

import time
from typing import Protocol

from loomgraph.agent.answers import may_go_on, pending_of
from loomgraph.engine.effects import APPROVAL_REQUEST_KIND
from loomgraph.protocols import RunRecord, RunStatus, Runtime
from loomgraph.serve.api_keys import ApiKey, hash_key, key_id, new_key
from loomgraph.serve.run_pages import EVERYONE, Everyone, RunPage, UnknownCursor, cursor_run_id
from loomgraph.serve.sql_store import PostgresStore, SqliteStore

__all__ = ["MemoryStore", "ServeStore", "approvers_run", "awaiting_approval", "open_store"]


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

    async def run(
        self, run_id: str, user_id: str | Everyone, *, agent: str | None = None
    ) -> RunRecord | None:
        """The run when it is this user's (any user's: `EVERYONE`) and, with `agent`, one an
        Agent of that name may go on with (`answers.may_go_on`), else None."""
        ...

    async def runs(
        self,
        user_id: str | Everyone,
        *,
        status: RunStatus | None = None,
        graph: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        agent: str | None = None,
        asked: bool = False,
    ) -> RunPage:
        """A page of this user's runs (every user's: `EVERYONE`; with `agent`, of those of
        that agent), newest first. With `asked`, the cursor must name a run that asked an
        approver (an approval request journaled): what the approvals listing shows."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MemoryStore:
    """The store of an in-memory journal: keys in a dict, runs read from the journal."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._keys: dict[str, ApiKey] = {}
        # Each run's number, as the SQL journals' row number: given once, in the order runs
        # started, never shifted by a later run (a page's cursor names a run, and the next
        # page holds the runs numbered before it). The journal's own order will not do: a run
        # that finishes moves to its end, a forgotten one leaves it.
        self._numbers: dict[str, int] = {}
        self._counted = 0  # the last number given

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

    async def run(
        self, run_id: str, user_id: str | Everyone, *, agent: str | None = None
    ) -> RunRecord | None:
        """The run when it is this user's (and the agent's)."""
        whose = None if isinstance(user_id, Everyone) else user_id
        for record in await self._runtime.runs(whose):
            if record.run_id == run_id:
                return record if agent is None or may_go_on(record.agent_name, agent) else None
        return None

    async def runs(
        self,
        user_id: str | Everyone,
        *,
        status: RunStatus | None = None,
        graph: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        agent: str | None = None,
        asked: bool = False,
    ) -> RunPage:
        """A page of this user's runs, newest first in the order they started (`_numbered`),
        so a run started or finished between two pages moves none from one page to the next;
        the cursor is the run id of the page's last run, as the SQL stores'."""
        records = await self._runtime.runs()
        self._numbered(records)
        mine = [
            r
            for r in records
            if (isinstance(user_id, Everyone) or r.user_id == user_id)
            and (agent is None or may_go_on(r.agent_name, agent))
        ]
        before = None if cursor is None else await self._number_of(cursor, mine, asked)
        rows = sorted(
            (
                (self._numbers[r.run_id], r)
                for r in mine
                if (before is None or self._numbers[r.run_id] < before)
                and (status is None or r.status == status)
                and (graph is None or r.graph_name == graph)
            ),
            key=lambda pair: pair[0],
            reverse=True,
        )
        page = [r for _, r in rows[:limit]]
        return RunPage(page, page[-1].run_id if len(rows) > limit and page else None)

    async def _number_of(self, cursor: str, mine: list[RunRecord], asked: bool) -> int:
        """The number of the run a cursor names, one of `mine` (that asked an approver, with
        `asked`); `UnknownCursor` for any other (a forgotten run's too: the in-memory journal
        keeps a bounded number of runs)."""
        run_id = cursor_run_id(cursor)
        if not any(r.run_id == run_id for r in mine):
            raise UnknownCursor(cursor)
        if asked and not any(
            e.kind == APPROVAL_REQUEST_KIND for e in await self._runtime.effects(run_id)
        ):
            raise UnknownCursor(cursor)
        return self._numbers[run_id]

    def _numbered(self, records: list[RunRecord]) -> None:
        """Number the runs of `records` new since the last call after every run numbered
        before, in the order they started; forget the numbers of runs the journal forgot."""
        kept = {r.run_id for r in records}
        for run_id in [n for n in self._numbers if n not in kept]:
            del self._numbers[run_id]
        for record in sorted((r for r in records if r.run_id not in self._numbers), key=_started):
            self._counted += 1
            self._numbers[record.run_id] = self._counted

    async def close(self) -> None:
        """Nothing to release."""


def _started(record: RunRecord) -> tuple[float, str]:
    return record.created_at, record.run_id


def open_store(runtime: Runtime) -> ServeStore:
    """The store beside a journal: in its SQLite file or Postgres schema, else in memory."""
    path = getattr(runtime, "path", None)
    if isinstance(path, str) and path != ":memory:" and hasattr(runtime, "ledger_site"):
        return SqliteStore(path)
    dsn, schema = getattr(runtime, "dsn", None), getattr(runtime, "schema", None)
    if isinstance(dsn, str) and isinstance(schema, str):
        return PostgresStore(dsn, schema)
    return MemoryStore(runtime)


async def awaiting_approval(
    store: ServeStore, agent: str | None, *, limit: int, cursor: str | None
) -> RunPage:
    """A page of every user's runs of `agent` that wait for an approver, newest first: what an
    approver is asked (the HTTP API's and the MCP server's listing, the viewer's page)."""
    # The cursor names a run the approver was shown, answered since or not: never one she
    # may not read (which would tell her that it exists).
    page = await store.runs(
        EVERYONE,
        status=RunStatus.AWAITING_APPROVAL,
        limit=limit,
        cursor=cursor,
        agent=agent,
        asked=True,
    )
    # A run asking its owner a question (`interrupt`) waits too, for no approver: left out,
    # so a page may hold fewer runs than `limit`; the cursor still follows the page.
    asking = [r for r in page.runs if _asks_an_approver(r)]
    return RunPage(asking, page.cursor)


def _asks_an_approver(record: RunRecord) -> bool:
    pending = pending_of(record)
    return pending is not None and bool(pending.call)


async def approvers_run(
    store: ServeStore, run_id: str, user_id: str, agent: str | None
) -> RunRecord | None:
    """The run of `agent` an approver (`user_id`) may answer or send on: her own, or another
    user's only while it waits for an approval (as `awaiting_approval` lists it); None
    otherwise, as for a run that does not exist, so its status is not told."""
    record = await store.run(run_id, EVERYONE, agent=agent)
    if record is None or (record.user_id != user_id and not _asks_an_approver(record)):
        return None
    return record
