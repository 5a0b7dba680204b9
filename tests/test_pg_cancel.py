"""A Postgres call stuck on a stalled network ends at once when cancelled, on every Postgres
backend: the connection is dropped (the server rolls back what it began), never held for a
ROLLBACK or a cancel request the stalled network would answer only at `command_timeout`.

The network is a proxy the test starts and stalls (tests/stall_proxy.py); the server itself
is never touched."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import pg
from loomgraph.governance.pg_ledger import PostgresLedger
from loomgraph.protocols import RunRecord
from loomgraph.runtime.postgres import PostgresRuntime
from stall_proxy import StallingProxy

pg_schema = pg.pg_schema
pytestmark = pytest.mark.postgres

SLOW = {"connect_timeout": 30.0, "command_timeout": 30.0}  # far longer than any wait here


def through(proxy: StallingProxy) -> str:
    url = urlsplit(pg.postgres_dsn())
    user = url.netloc.rpartition("@")[0]
    return urlunsplit(url._replace(netloc=f"{user}@127.0.0.1:{proxy.port}"))


def record(run_id: str) -> RunRecord:
    return RunRecord(run_id, "g", "h", None, None, created_at=1.0, updated_at=1.0)


def journal(dsn: str, schema: str) -> tuple[Any, Callable[[Any, str], Awaitable[Any]]]:
    return PostgresRuntime(dsn, schema=schema, **SLOW), lambda j, r: j.start_run(record(r))


def ledger(dsn: str, schema: str) -> tuple[Any, Callable[[Any, str], Awaitable[Any]]]:
    return PostgresLedger(dsn, schema=schema, **SLOW), lambda j, r: j.run_clock(r, 1.0, None)


def journal_read(dsn: str, schema: str) -> tuple[Any, Callable[[Any, str], Awaitable[Any]]]:
    return PostgresRuntime(dsn, schema=schema, **SLOW), lambda j, r: j.load_run("r0")


@pytest.mark.parametrize("backend", [journal, ledger, journal_read])
async def test_a_call_stuck_on_a_stalled_network_ends_at_once_when_cancelled(
    pg_schema: str, backend: Any
) -> None:
    with StallingProxy("127.0.0.1", urlsplit(pg.postgres_dsn()).port or 5432) as proxy:
        store, write = backend(through(proxy), pg_schema)
        try:
            await write(store, "r0")  # connected, tables made
            proxy.stall()
            task = asyncio.create_task(write(store, "r1"))
            done, _ = await asyncio.wait({task}, timeout=1.0)
            assert not done  # stuck on the network, well inside its 30 s
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=5.0)
            assert done and task.cancelled()
            proxy.flow()
            await write(store, "r2")  # the next call goes on, on another connection
        finally:
            proxy.flow()
            async with asyncio.timeout(60):
                await store.close()
