"""The PostgreSQL journal and budget ledger under faults, as a probe found them (docs/runtime.md,
"Postgres outages", "Errors"): a server-side statement or lock timeout raised raw asyncpg
errors (and a lock timeout on lease renewal stopped the run), an id over Postgres's index
limit did too, a ledger refused a schema its journal took, lost its tables untyped, and
ignored the journal's time limits. Each test's docstring says what went wrong before."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import pg
from loomgraph import Agent
from loomgraph.models import ScriptedModel
from loomgraph.runtime import JournalError
from loomgraph.runtime.postgres import PostgresRuntime

pytestmark = pytest.mark.postgres
pg_schema = pg.pg_schema

SCRIPT: list[Any] = [
    {"text": "Looking it up.", "tool_calls": [{"tool": "lookup", "args": {"city": "Paris"}}]},
    "Paris is in France.",
]


def agent(runtime: Any, on_tool: Callable[[str], Any] = lambda city: None) -> Agent:
    """A one-tool agent on `runtime`; `on_tool` runs inside the tool (may be async)."""

    async def lookup(city: str) -> str:
        """Find the country of a city."""
        got = on_tool(city)
        if asyncio.iscoroutine(got):
            await got
        return {"Paris": "France"}[city]

    return Agent("geography", model=ScriptedModel(SCRIPT), tools=[lookup], runtime=runtime)


async def sql(statement: str, *args: Any) -> Any:
    """Run one statement on a connection of its own (the operator's psql)."""
    import asyncpg

    con = await asyncpg.connect(pg.postgres_dsn())
    try:
        return await con.fetch(statement, *args)
    finally:
        await con.close()


async def expire(schema: str, run_id: str) -> None:
    """Move a run's lease into the past, as if its holder's time had run out."""
    await sql(f'UPDATE "{schema}".leases SET expires_at = 0 WHERE run_id = $1', run_id)


@pytest.mark.parametrize(
    ("setting", "table"),
    [
        ("statement_timeout=300", "effects"),
        ("lock_timeout=300", "effects"),
        ("statement_timeout=300", "transitions"),
    ],
)
async def test_a_server_side_timeout_is_journal_unavailable(
    pg_schema: str, setting: str, table: str
) -> None:
    """An operator runs the journal with a server-side `statement_timeout` or
    `lock_timeout` (set on the role or database, or here in the DSN as asyncpg passes it)
    and a migration holds a lock on a journal table while a run's tool is running. Expected:
    the journal write that times out raises `JournalUnavailable` (docs/runtime.md, Errors:
    "a write lock was not granted within busy_timeout", "no answer came within ...";
    `PostgresLedger` already maps both to `LedgerUnavailable`), the run stays resumable and
    its resume completes. Got: the raw `asyncpg.QueryCanceledError` /
    `LockNotAvailableError` out of `agent.run`."""
    import asyncpg

    dsn = f"{pg.postgres_dsn()}?{setting}"
    runtime = PostgresRuntime(dsn, schema=pg_schema)
    await runtime.connect()
    locker = await asyncpg.connect(pg.postgres_dsn())
    lock = locker.transaction()
    tools: list[str] = []

    async def lock_the_table(city: str) -> None:
        tools.append(city)
        if len(tools) == 1:  # the first run's tool: the next journal write waits on the lock
            await lock.start()
            await locker.execute(f'LOCK TABLE "{pg_schema}".{table} IN ACCESS EXCLUSIVE MODE')

    try:
        with pytest.raises(Exception) as raised:
            await agent(runtime, lock_the_table).run("where is Paris?")
        await lock.rollback()
        assert isinstance(raised.value, JournalError), repr(raised.value)
        assert "unavailable" in str(raised.value)
        (record,) = await runtime.runs()
        assert record.status == "running"
        lease = await runtime.lease(record.run_id)
        if lease is not None:
            await expire(pg_schema, record.run_id)
        result = await agent(runtime, lock_the_table).resume(record.run_id)
        assert result.status == "completed" and result.output == SCRIPT[-1]
    finally:
        await locker.close()
        await runtime.close()


async def test_a_long_user_id_is_refused_with_a_typed_error(pg_schema: str) -> None:
    """A user runs an agent on Postgres with a long user id (an opaque token, a JWT
    subject or a signed id of 6,000 characters; SQLite journals take it). Expected: the run
    completes, or a typed `JournalError` (as `JournalIdError` for ids no backend can store)
    naming `user_id`, before anything is written. Got: the raw
    `asyncpg.ProgramLimitExceededError` "index row size 6016 exceeds btree version 4 maximum
    2704 for index runs_user" (the same for a long run id, on `runs.run_id`'s index)."""
    import secrets

    runtime = PostgresRuntime(pg.postgres_dsn(), schema=pg_schema)
    try:
        long_id = secrets.token_hex(3000)  # random: the index entry cannot be compressed
        try:
            result = await agent(runtime).run("where is Paris?", user_id=long_id)
        except Exception as err:
            assert isinstance(err, JournalError), repr(err)
            assert "user_id" in str(err)
            assert await runtime.runs() == []
        else:
            assert result.status == "completed"
            assert [r.user_id for r in await runtime.runs(long_id)] == [long_id]
    finally:
        await runtime.close()


async def test_a_lock_timeout_on_lease_renewal_is_retried_not_fatal(pg_schema: str) -> None:
    """The journal's role has `lock_timeout` set (a common guard), and an operator's
    `ALTER TABLE`/`VACUUM FULL` holds a lock on `leases` for a moment while a run's tool
    works. Expected (docs/runtime.md, Fencing: "A renewal the journal does not answer ... a
    lock held past busy_timeout ... is tried again"): the renewal is retried with a
    warning, and once the lock is gone the run completes, its tool run once. Got: the
    renewal's raw `asyncpg.LockNotAvailableError` is not a `ServiceUnavailable`, so
    `hold_lease` stops the run at once (`except Exception: stop(err)`) and `agent.run`
    raises the raw driver error."""
    import logging

    import asyncpg

    runtime = PostgresRuntime(f"{pg.postgres_dsn()}?lock_timeout=200", schema=pg_schema)
    runtime.lease_seconds = 3.0  # a renewal every second, so one meets the lock soon
    await runtime.connect()
    locker = await asyncpg.connect(pg.postgres_dsn())
    lock = locker.transaction()
    renewal_failed = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "lease renewal" in record.getMessage():
                renewal_failed.set()

    watch = Watch()
    logging.getLogger("loomgraph").addHandler(watch)
    tools: list[str] = []

    async def hold_leases_locked(city: str) -> None:
        tools.append(city)
        await lock.start()
        await locker.execute(f'LOCK TABLE "{pg_schema}".leases IN ACCESS EXCLUSIVE MODE')
        try:
            async with asyncio.timeout(60):  # far past the renewal due after one second
                await renewal_failed.wait()
        finally:
            await lock.rollback()

    try:
        result = await agent(runtime, hold_leases_locked).run("where is Paris?")
        assert result.status == "completed" and result.output == SCRIPT[-1]
        assert tools == ["Paris"]
    finally:
        logging.getLogger("loomgraph").removeHandler(watch)
        await locker.close()
        await runtime.close()


async def test_a_journal_schema_the_journal_takes_also_takes_the_budget_ledger() -> None:
    """A user keeps each tenant's journal in its own schema, named after the tenant
    (`PostgresRuntime(dsn, schema="tenant-a")`, which the journal quotes and accepts), and
    gives the Agent a budget, whose ledger goes next to the journal (docs/governance.md).
    Expected: the Agent is made and runs, the ledger in the same schema (or a typed error
    naming the schema when the runtime is made). Got: `Agent(...)` raises a bare
    `ValueError: invalid schema name 'tenant-a...'` from `PostgresLedger`, whose `IDENT`
    (governance/ledger_tables.py:28) is narrower than the journal's `quote_ident`."""
    from loomgraph.governance.budget import StandardBudget

    pg.require_postgres()
    schema = "tenant-" + pg.unique_name("a")
    runtime = PostgresRuntime(pg.postgres_dsn(), schema=schema)
    try:
        the_agent = Agent(
            "geography",
            model=ScriptedModel(["Paris is in France."]),
            runtime=runtime,
            budget=StandardBudget(),
        )
        result = await the_agent.run("where is Paris?")
        assert result.status == "completed"
    finally:
        await runtime.close()
        await sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_budget_ledger_tables_dropped_mid_run_is_a_typed_error(pg_schema: str) -> None:
    """An operator drops the schema holding the budget ledger
    (`PostgresLedger(dsn, schema=...)`) while a run's tool works. Expected: a typed error
    naming the ledger, as the journal's missing tables are `JournalCorrupted` naming the
    journal (docs/runtime.md, Errors), and the run left resumable. Got: the raw
    `asyncpg.UndefinedTableError: relation "....loom_budget_holds" does not exist` out of
    `agent.run` (`PostgresLedger._translate` passes every non-outage error through)."""
    from loomgraph.errors import LoomgraphError
    from loomgraph.governance.budget import StandardBudget
    from loomgraph.governance.pg_ledger import PostgresLedger

    ledger_schema = pg.unique_name("ledger")
    runtime = PostgresRuntime(pg.postgres_dsn(), schema=pg_schema)
    ledger = PostgresLedger(pg.postgres_dsn(), schema=ledger_schema)

    async def drop_the_ledger(city: str) -> None:
        await sql(f"DROP SCHEMA {ledger_schema} CASCADE")

    the_agent = agent(runtime, drop_the_ledger)
    the_agent = Agent(
        "geography",
        model=ScriptedModel(SCRIPT),
        tools=the_agent.deps.tools,
        runtime=runtime,
        budget=StandardBudget(ledger=ledger),
    )
    try:
        with pytest.raises(Exception) as raised:
            await the_agent.run("where is Paris?")
        assert isinstance(raised.value, LoomgraphError), repr(raised.value)
        assert ledger_schema in str(raised.value)
        (record,) = await runtime.runs()
        assert record.status == "running"
    finally:
        await runtime.close()
        await ledger.close()
        await sql(f"DROP SCHEMA IF EXISTS {ledger_schema} CASCADE")


async def test_the_ledger_next_to_the_journal_keeps_the_journal_time_limits(
    pg_schema: str,
) -> None:
    """An operator bounds every wait on Postgres for a run
    (`PostgresRuntime(..., connect_timeout=2, command_timeout=2, pool_size=1)`, docs/runtime.md
    "Postgres outages") and gives the Agent a budget, whose ledger the Agent places in the
    journal's schema. Expected: the placed ledger waits no longer than the journal does (a
    stalled server ends the run within the limits the operator chose) and opens no bigger
    pool. Got: `ledger_at` (governance/ledger_sites.py:23) makes `PostgresLedger(dsn,
    schema=...)` with its defaults, 10 s / 15 s and 4 connections: `PostgresSite` carries
    only the DSN and schema."""
    from loomgraph.governance.budget import StandardBudget

    runtime = PostgresRuntime(
        pg.postgres_dsn(), schema=pg_schema, connect_timeout=2.0, command_timeout=2.0, pool_size=1
    )
    the_agent = Agent(
        "geography",
        model=ScriptedModel(["Paris is in France."]),
        runtime=runtime,
        budget=StandardBudget(),
    )
    try:
        assert (await the_agent.run("where is Paris?")).status == "completed"
        ledger: Any = the_agent.deps.budget.ledger  # type: ignore[attr-defined]
        assert ledger.schema == pg_schema  # it is the placed one
        assert ledger.connect_timeout <= runtime.connect_timeout
        assert ledger.command_timeout <= runtime.command_timeout
        assert ledger.pool_size <= runtime.pool_size
    finally:
        await runtime.close()
        await the_agent.deps.budget.ledger.close()  # type: ignore[attr-defined]
