"""Reusable PostgreSQL test support: the DSN, skip-or-fail, and a private schema per test.

Tests run against the real server at 127.0.0.1:5432 (override with LOOMGRAPH_TEST_DSN).
When it is unreachable they skip, unless LOOMGRAPH_REQUIRE_POSTGRES=1, when they fail.

Usage in a test module (the assignment, rather than importing the fixture by name, keeps
ruff from reporting the fixture parameter as a redefinition):

    import pg

    pg_schema = pg.pg_schema          # the fixture: a fresh schema, dropped afterwards

    async def test_x(pg_schema: str) -> None:
        dsn = pg.postgres_dsn()
        table = f"{pg_schema}.my_table"

Or call `pg.require_postgres()` directly for the DSN (skips or fails like the fixture).
"""

from __future__ import annotations

import asyncio
import functools
import os
import uuid
from collections.abc import Iterator

import pytest

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_dsn() -> str:
    """The DSN of the test server (env LOOMGRAPH_TEST_DSN, else the local default)."""
    return os.environ.get("LOOMGRAPH_TEST_DSN", DEFAULT_DSN)


def postgres_required() -> bool:
    """Whether an unreachable server must fail the tests instead of skipping them."""
    return os.environ.get("LOOMGRAPH_REQUIRE_POSTGRES", "") not in ("", "0")


@functools.cache
def _unavailable_reason() -> str | None:
    """Why PostgreSQL cannot be used, or None when it can; probed once per session."""
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed (pip install 'loomgraph[postgres]')"

    async def probe() -> None:
        conn = await asyncpg.connect(postgres_dsn(), timeout=5)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"PostgreSQL at {postgres_dsn()} is unreachable: {type(exc).__name__}: {exc}"
    return None


def require_postgres() -> str:
    """The DSN; skips the calling test when the server is unreachable (fails if required)."""
    reason = _unavailable_reason()
    if reason is not None:
        if postgres_required():
            pytest.fail(f"LOOMGRAPH_REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return postgres_dsn()


def _run_sql(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(postgres_dsn(), timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def unique_name(prefix: str = "t") -> str:
    """A fresh identifier, safe unquoted in SQL (lower case, letters, digits, underscore)."""
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


@pytest.fixture
def pg_dsn() -> str:
    """The DSN of the test server; skips (or fails, if required) when it is unreachable."""
    return require_postgres()


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh schema for one test, dropped with everything in it afterwards."""
    require_postgres()
    schema = unique_name("loomtest")
    _run_sql(f"CREATE SCHEMA {schema}")
    try:
        yield schema
    finally:
        _run_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
