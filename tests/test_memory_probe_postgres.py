"""Probe findings on PostgresMemory: a stalled network and over-long schema names.

The real server at 127.0.0.1:5432, reached through a stalling TCP proxy the test starts
(tests/stall_proxy.py); each test in a schema of its own.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import pytest

import pg
from loomgraph._storage.pg_pool import quote_ident
from loomgraph.memory import MemoryUnavailable
from loomgraph.protocols import Episode
from stall_proxy import StallingProxy

pytestmark = pytest.mark.postgres
pg_schema = pg.pg_schema
TIMEOUTS = {"connect_timeout": 2.0, "command_timeout": 2.0}
BOUND = 60.0  # far above the timeouts; reaching it means the call hung


def through(proxy: StallingProxy) -> str:
    url = urlsplit(pg.postgres_dsn())
    user = url.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{proxy.port}" if user else f"127.0.0.1:{proxy.port}"
    return urlunsplit(url._replace(netloc=netloc))


def ep(run: str) -> Episode:
    return Episode("alice", "s1", run, f"hello {run}", "hi", [], 1000.0)


async def _count(schema: str, table: str) -> int:
    import asyncpg

    con = await asyncpg.connect(pg.postgres_dsn())
    try:
        return int(await con.fetchval(f"SELECT count(*) FROM {quote_ident(schema)}.{table}"))
    finally:
        await con.close()


# --------------------------------------------------------------------------- 3: timeouts


async def test_a_stalled_network_is_memory_unavailable_within_the_timeouts(pg_schema: str) -> None:
    from loomgraph.memory.postgres import PostgresMemory

    loop = asyncio.get_running_loop()
    with StallingProxy("127.0.0.1", urlsplit(pg.postgres_dsn()).port or 5432) as proxy:
        memory = PostgresMemory(through(proxy), schema=pg_schema, **TIMEOUTS)
        await memory.remember(ep("r1"))
        proxy.stall()
        for call in (
            lambda: memory.remember(ep("r2")),
            lambda: memory.seed(user_id="alice", session_id="s2", query="hello"),
            lambda: memory.forget("alice"),
        ):
            start = loop.time()
            with pytest.raises(MemoryUnavailable, match=r"postgres memory .*command_timeout 2\.0"):
                async with asyncio.timeout(BOUND):
                    await call()
            assert loop.time() - start < BOUND
        async with asyncio.timeout(BOUND):
            await memory.close()
        proxy.flow()
        assert await _count(pg_schema, "memory_episodes") == 1  # r1 kept, nothing else


async def test_a_call_stuck_on_a_stalled_network_cancels_promptly(pg_schema: str) -> None:
    from loomgraph.memory.postgres import PostgresMemory

    with StallingProxy("127.0.0.1", urlsplit(pg.postgres_dsn()).port or 5432) as proxy:
        memory = PostgresMemory(
            through(proxy), schema=pg_schema, connect_timeout=30.0, command_timeout=30.0
        )
        await memory.remember(ep("r1"))
        proxy.stall()
        task = asyncio.create_task(memory.remember(ep("r2")))
        done, _ = await asyncio.wait({task}, timeout=1.0)
        assert not done  # stuck on the network, well inside its 30 s
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5.0)
        assert done and task.cancelled()
        async with asyncio.timeout(BOUND):
            await memory.close()
        proxy.flow()
    direct = PostgresMemory(pg.postgres_dsn(), schema=pg_schema)
    async with direct:
        assert [e.run_id for e in await direct.episodes("alice")] == ["r1"]


async def test_memory_timeouts_have_defaults_and_are_checked(pg_schema: str) -> None:
    from loomgraph.memory.postgres import PostgresMemory

    memory = PostgresMemory(pg.postgres_dsn(), schema=pg_schema)
    assert (memory.connect_timeout, memory.command_timeout) == (10.0, 15.0)
    for bad in ({"connect_timeout": 0.0}, {"command_timeout": -1.0}):
        with pytest.raises(ValueError, match="timeout"):
            PostgresMemory(pg.postgres_dsn(), schema=pg_schema, **bad)


# --------------------------------------------------------------------------- 8: long names


@pytest.mark.parametrize("name", ["a" * 64, "é" * 32, "x\udcff"])
def test_quote_ident_refuses_names_postgres_would_change(name: str) -> None:
    with pytest.raises(ValueError, match="identifier") as caught:
        quote_ident(name)
    assert repr(name) in str(caught.value)


def test_quote_ident_keeps_names_of_63_bytes() -> None:
    assert quote_ident("a" * 63) == '"' + "a" * 63 + '"'
    assert quote_ident("é" * 31 + "a") == '"' + "é" * 31 + 'a"'
    assert quote_ident('we"ird') == '"we""ird"'


async def test_long_schema_names_are_refused_before_anything_is_created(pg_schema: str) -> None:
    import asyncpg

    from loomgraph.memory.postgres import PostgresMemory
    from loomgraph.runtime.postgres import PostgresRuntime

    base = "tenant_" + "acme_international_holdings_europe_regional_division_west_"
    germany, france = base + "germany", base + "france"
    for cls in (PostgresMemory, PostgresRuntime):
        for name in (germany, france):
            with pytest.raises(ValueError, match="longer than 63 bytes") as caught:
                cls(pg.postgres_dsn(), schema=name)
            assert repr(name) in str(caught.value)
    con = await asyncpg.connect(pg.postgres_dsn())
    try:
        found = await con.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1", base[:63]
        )
    finally:
        await con.close()
    assert found == 0
    async with PostgresMemory(pg.postgres_dsn(), schema=pg_schema) as memory:  # 63 bytes or less
        await memory.set_block("alice", "persona", "kept")
        assert await memory.get_blocks("alice") == {"persona": "kept"}
