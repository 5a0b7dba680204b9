"""A Postgres ledger transaction that the server rolls back for a conflict is tried again.

A settlement naming only some of its hold's scopes (the budget's caps changed between the
reservation and the settlement, a process restarted with another config) locks the rest in a
second round, after the first; a transaction locking the same scopes in sorted order can
then deadlock with it, and Postgres fails one of the two. That used to be the visit's
failure (asyncpg's `DeadlockDetectedError` from the ledger); the work was never done, so the
ledger now does the transaction again.
"""

from __future__ import annotations

import asyncio

import asyncpg

import pg
from loomgraph.governance import PostgresLedger
from loomgraph.governance.ledger import Change, Hold, LedgerView

pg_schema = pg.pg_schema


async def _waiting_for_a_lock(con: asyncpg.Connection, pid: int) -> None:
    """Until the backend `pid` waits for an advisory lock (bounded by the caller)."""
    while not await con.fetchval(
        "SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND NOT granted",
        pid,
    ):
        await asyncio.sleep(0.01)


async def test_a_settlement_that_deadlocks_is_done_again(pg_schema: str) -> None:
    ledger = PostgresLedger(pg.postgres_dsn(), schema=pg_schema, pool_size=1)
    hold = Hold("h-1", "r-1", ("global", "user:a"), {"tool_calls": 1})
    await ledger.transact(hold.scopes, None, lambda view: Change(hold=hold))
    pool = await ledger._pools.get()
    ledger_pid = await pool.fetchval("SELECT pg_backend_pid()")  # its one connection
    other = await asyncpg.connect(pg.postgres_dsn())
    decided: list[LedgerView] = []

    def settle(view: LedgerView) -> Change:
        decided.append(view)
        assert view.hold is not None
        return Change(remove=view.hold, spend={"tool_calls": 1}, spend_scopes=view.hold.scopes)

    try:
        # Only the ledger's transaction may find the deadlock (and be the one failed).
        await other.execute("SET deadlock_timeout = '60s'")
        tx = other.transaction()
        await tx.start()
        await other.execute("SELECT pg_advisory_xact_lock($1)", ledger._key("global"))
        # Names `user:a` only: locks it, reads the hold, then waits for `global`.
        settling = asyncio.create_task(ledger.transact(("user:a",), hold.id, settle))
        async with asyncio.timeout(30):
            await _waiting_for_a_lock(other, ledger_pid)
            # Sorted order: `global`, then `user:a`, which the settlement holds.
            await other.execute("SELECT pg_advisory_xact_lock($1)", ledger._key("user:a"))
        await tx.commit()
        async with asyncio.timeout(30):
            totals = await settling
        assert totals["global"].spent == {"tool_calls": 1}
        assert totals["user:a"].spent == {"tool_calls": 1}
        assert await ledger.holds() == []
        assert (await ledger.totals("user:a")).spent == {"tool_calls": 1}
        assert len(decided) == 1  # the failed attempt never reached its decision
    finally:
        await other.close()
        await ledger.close()
