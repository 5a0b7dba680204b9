"""A Postgres outage, made by a TCP proxy the test starts in front of the real server and then
cuts (connections closed, new ones refused) or hangs (connections open, nothing forwarded).

Every run whose journal goes through the proxy ends, within a bound, either completed or
raising `JournalUnavailable`; none hangs. Afterwards the journal, read straight from the
server, holds a consistent prefix of each run: the lease still names the cut-off worker with
its token, and once that lease is gone a resume finishes the run under the next token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import pg
from loomgraph import Agent
from loomgraph.models import ScriptedModel
from loomgraph.runtime import JournalUnavailable
from loomgraph.runtime.postgres import PostgresRuntime
from tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres
pg_schema = pg.pg_schema

SCRIPT: list[Any] = [
    {"text": "Looking it up.", "tool_calls": [{"tool": "lookup", "args": {"city": "Paris"}}]},
    {"text": "Once more.", "tool_calls": [{"tool": "lookup", "args": {"city": "Tokyo"}}]},
    "Paris is in France, Tokyo in Japan.",
]
RUNS = 3
# Seconds: far above the timeouts below (a run's way out meets a few of them in a row, on a
# loaded machine); reaching it means a run hung.
BOUND = 240.0
TIMEOUTS = {"connect_timeout": 8.0, "command_timeout": 8.0}


def through(proxy: TcpProxy) -> str:
    """The test server's DSN, pointed at the proxy."""
    url = urlsplit(pg.postgres_dsn())
    user = url.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{proxy.port}" if user else f"127.0.0.1:{proxy.port}"
    return urlunsplit(url._replace(netloc=netloc))


def agent(runtime: PostgresRuntime, on_tool: Callable[[str], None] = lambda city: None) -> Agent:
    async def lookup(city: str) -> str:
        """Find the country of a city."""
        on_tool(city)
        return {"Paris": "France", "Tokyo": "Japan"}[city]

    return Agent("geography", model=ScriptedModel(SCRIPT), tools=[lookup], runtime=runtime)


async def outcomes(runs: list[Any]) -> list[Any]:
    """Each run's result or error; failing the test if any is still going after BOUND."""
    async with asyncio.timeout(BOUND):
        return await asyncio.gather(*runs, return_exceptions=True)


def check_ended(results: list[Any]) -> list[JournalUnavailable]:
    """Every run completed or raised JournalUnavailable; the errors of those that did not."""
    errors = []
    for result in results:
        if isinstance(result, BaseException):
            assert isinstance(result, JournalUnavailable), repr(result)
            assert "unavailable" in str(result)
            errors.append(result)
        else:
            assert result.status == "completed", result.reason
    return errors


async def test_a_cut_connection_ends_every_run_with_journal_unavailable(pg_schema: str) -> None:
    with TcpProxy("127.0.0.1", urlsplit(pg.postgres_dsn()).port or 5432) as proxy:
        runtime = PostgresRuntime(through(proxy), schema=pg_schema, **TIMEOUTS)
        await runtime.connect()
        every_run_started = asyncio.Event()
        first_calls: list[str] = []

        def count(city: str) -> None:
            # Each run looks Paris up first: once every run has, every run is journaled (a
            # cut at the first call of any could come before a slower run had started) and
            # each still has a step to journal, so the cut comes mid-run.
            first_calls.extend([city] if city == "Paris" else [])
            if len(first_calls) == RUNS:
                every_run_started.set()

        the_agent = agent(runtime, count)

        async def cut_when_a_tool_runs() -> None:
            await every_run_started.wait()
            proxy.cut()

        cutter = asyncio.create_task(cut_when_a_tool_runs())
        results = await outcomes([the_agent.run(f"where is Paris? ({i})") for i in range(RUNS)])
        await cutter
        assert len(check_ended(results)) >= 1  # the cut came mid-run
        async with asyncio.timeout(BOUND):
            await runtime.close()  # bounded, although the server is gone
    # The journal, read straight from the server: consistent, and every run resumable.
    direct = PostgresRuntime(pg.postgres_dsn(), schema=pg_schema)
    try:
        records = await direct.runs()
        assert len(records) == RUNS
        for record in records:
            transitions = await direct.transitions(record.run_id)
            assert [t.seq for t in transitions] == list(range(1, len(transitions) + 1))
            if record.status == "completed":
                continue
            assert record.status == "running"
            lease = await direct.lease(record.run_id)
            if lease is not None:  # the cut-off worker could not release it
                assert lease.token == 1
                await expire(pg_schema, record.run_id)
            result = await agent(direct).resume(record.run_id)
            assert result.status == "completed" and result.output == SCRIPT[-1]
            after = await direct.lease(record.run_id)
            assert after is None or after.token == 2
    finally:
        await direct.close()


async def test_a_hung_connection_ends_every_run_within_the_timeouts(pg_schema: str) -> None:
    with TcpProxy("127.0.0.1", urlsplit(pg.postgres_dsn()).port or 5432) as proxy:
        runtime = PostgresRuntime(through(proxy), schema=pg_schema, **TIMEOUTS)
        await runtime.connect()
        tools_called = asyncio.Event()
        the_agent = agent(runtime, lambda city: tools_called.set())

        async def hang_when_a_tool_runs() -> None:
            await tools_called.wait()
            proxy.hang()

        hanger = asyncio.create_task(hang_when_a_tool_runs())
        loop = asyncio.get_running_loop()
        start = loop.time()
        results = await outcomes([the_agent.run(f"where is Paris? ({i})") for i in range(RUNS)])
        await hanger
        errors = check_ended(results)
        assert errors  # the hang came mid-run
        assert loop.time() - start < BOUND
        assert any("Timeout" in str(e) or "timed out" in str(e) for e in errors), errors
        async with asyncio.timeout(BOUND):
            await runtime.close()
        # Connecting anew through a hung proxy times out too, as JournalUnavailable.
        fresh = PostgresRuntime(through(proxy), schema=pg_schema, **TIMEOUTS)
        with pytest.raises(JournalUnavailable):
            async with asyncio.timeout(BOUND):
                await fresh.connect()
        await fresh.close()


async def test_timeouts_have_defaults_and_are_checked(pg_schema: str) -> None:
    runtime = PostgresRuntime(pg.postgres_dsn(), schema=pg_schema)
    assert (runtime.connect_timeout, runtime.command_timeout) == (10.0, 15.0)
    for bad in ({"connect_timeout": 0}, {"command_timeout": -1.0}):
        with pytest.raises(ValueError, match="timeout"):
            PostgresRuntime(pg.postgres_dsn(), schema=pg_schema, **bad)


async def expire(schema: str, run_id: str) -> None:
    """Move a run's lease into the past, as if its holder's time had run out."""
    import asyncpg

    con = await asyncpg.connect(pg.postgres_dsn())
    try:
        await con.execute(f'UPDATE "{schema}".leases SET expires_at = 0 WHERE run_id = $1', run_id)
    finally:
        await con.close()
