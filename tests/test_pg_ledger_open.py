"""A Postgres ledger opened on a schema that has its tables alters nothing.

Found by probing a worker fleet: every new ledger pool ran `ALTER TABLE ... ADD COLUMN IF
NOT EXISTS` (and `CREATE INDEX IF NOT EXISTS`), which lock the table even when there is
nothing to add. A worker starting or restarting waited for the ledger transactions of the
runs other workers advanced, and deadlocked with them: runs elsewhere ended `failed` with
`DeadlockDetectedError`. Opening now reads the catalog first, and changes the schema only
when something is missing (a new schema, or one made before columns were added).
"""

from __future__ import annotations

import asyncpg

import pg
from loomgraph.governance import PostgresLedger
from loomgraph.governance.ledger import Change

pg_schema = pg.pg_schema


async def test_opening_a_made_ledger_waits_for_no_transaction_of_another(pg_schema: str) -> None:
    first = PostgresLedger(pg.postgres_dsn(), schema=pg_schema)
    await first.transact(("global",), None, lambda view: Change())  # makes the tables
    await first.close()
    other = await asyncpg.connect(pg.postgres_dsn())
    try:
        # Another worker's transaction, under way on the holds table.
        live = other.transaction()
        await live.start()
        await other.execute(
            f"INSERT INTO {pg_schema}.loom_budget_holds VALUES "
            "('h-1', 'r-1', '[\"global\"]', '{}', 0, NULL, NULL)"
        )
        # A second worker starts: its first read must not wait for that transaction.
        starting = PostgresLedger(pg.postgres_dsn(), schema=pg_schema, command_timeout=3.0)
        try:
            assert await starting.holds() == []  # (the other's insert is not committed)
        finally:
            await starting.close()
        await live.rollback()
    finally:
        await other.close()


async def test_a_ledger_made_before_its_columns_is_given_them(pg_schema: str) -> None:
    """The catalog check still lets a ledger made before `effect` and `execution` be
    given them when it is opened."""
    con = await asyncpg.connect(pg.postgres_dsn())
    try:
        first = PostgresLedger(pg.postgres_dsn(), schema=pg_schema)
        await first.transact(("global",), None, lambda view: Change())
        await first.close()
        for table in ("loom_budget_holds", "loom_budget_charges"):
            await con.execute(f"ALTER TABLE {pg_schema}.{table} DROP COLUMN effect")
        again = PostgresLedger(pg.postgres_dsn(), schema=pg_schema)
        try:
            assert await again.holds() == []
        finally:
            await again.close()
        columns = await con.fetch(
            "SELECT table_name FROM information_schema.columns "
            "WHERE table_schema = $1 AND column_name = 'effect'",
            pg_schema,
        )
        assert sorted(r["table_name"] for r in columns) == [
            "loom_budget_charges",
            "loom_budget_holds",
        ]
    finally:
        await con.close()
