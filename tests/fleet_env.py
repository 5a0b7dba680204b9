"""The environment of a `loomgraph serve --fleet` server on the test's Postgres schema, shared
by the serve tests that run one (or serve `fleet_agent` in process with `fleet=True`).

Usage in a test module (as with `pg.pg_schema`, the assignment keeps ruff from reporting
the fixture parameter as a redefinition; the module also needs `pg_schema = pg.pg_schema`):

    import fleet_env as fleet_support

    fleet_env = fleet_support.fleet_env
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import pg
from serve_process import environment

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"


@pytest.fixture
def fleet_env(pg_schema: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a `--fleet` server on the test's Postgres schema."""
    env = environment(tmp_path / "unused.db")
    env.update(
        FLEET_DSN=pg.postgres_dsn(),
        FLEET_SCHEMA=pg_schema,
        PYTHONPATH=os.pathsep.join([str(SRC), str(TESTS)]),
    )
    return env
