"""Every journal, fresh for a test: a fixture that makes one (the durable ones share their
file or schema between the objects made) and a context that opens and closes one.

Usage in a test module (as `pg.pg_schema`, which the Postgres journal needs beside it):

    pg_schema = pg.pg_schema
    make = journal_kinds.make        # or `durable`: SQLite and Postgres only

    async def test_x(make: journal_kinds.Factory) -> None:
        async with journal_kinds.opened(make) as runtime:
            ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import pg
from loomgraph.runtime.memory import InMemoryRuntime
from loomgraph.runtime.sqlite import SqliteRuntime

Factory = Callable[[], Any]
ALL = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
DURABLE = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def factory(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """A maker of runtime objects that all share one journal (except in memory)."""
    if kind == "memory":
        return InMemoryRuntime
    if kind == "sqlite":
        path = tmp_path / "journal.db"
        return lambda: SqliteRuntime(str(path))
    from loomgraph.runtime.postgres import PostgresRuntime

    schema = request.getfixturevalue("pg_schema")
    dsn = pg.postgres_dsn()
    return lambda: PostgresRuntime(dsn, schema=schema)


@pytest.fixture(params=ALL)
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """Every runtime; the durable ones share one journal between the objects made."""
    return factory(request.param, request, tmp_path)


@pytest.fixture(params=DURABLE)
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """The durable runtimes only."""
    return factory(request.param, request, tmp_path)


@asynccontextmanager
async def opened(factory: Factory) -> AsyncIterator[Any]:
    """A runtime `factory` makes, closed afterwards."""
    runtime = factory()
    try:
        yield runtime
    finally:
        await runtime.close()
