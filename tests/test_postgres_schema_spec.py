"""A Postgres spec names its schema (`postgres://…/db?schema=NAME`): an agent's journal and
memory, an agent file, and the CLI's `runs` commands reach a fleet kept outside `public`.
Needs the server (LOOMGRAPH_REQUIRE_POSTGRES=1 fails instead of skipping)."""

from __future__ import annotations

import asyncio
import json

import pytest

import pg
from loomgraph import Agent
from loomgraph.agent.config_errors import ConfigError
from loomgraph.cli.main import main
from loomgraph.models import ScriptedModel
from loomgraph.runtime.postgres import PostgresRuntime

pg_schema = pg.pg_schema


def test_an_agent_keeps_its_runs_in_the_schema_its_spec_names(
    pg_schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = f"{pg.postgres_dsn()}?schema={pg_schema}"

    async def run() -> str:
        agent = Agent("x", model=ScriptedModel(["hello"]), runtime=spec, memory=spec)
        try:
            result = await agent.run("hi", user_id="alice")
        finally:
            await agent.aclose()
        assert result.ok
        runtime = PostgresRuntime(pg.postgres_dsn(), schema=pg_schema)
        try:  # in the named schema, read as the fleet's own code reads it
            assert [r.run_id for r in await runtime.runs()] == [result.run_id]
        finally:
            await runtime.close()
        return result.run_id

    run_id = asyncio.run(run())
    assert main(["runs", "list", "--runtime", spec, "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert [row["run_id"] for row in listed] == [run_id]


def test_a_spec_without_the_schema_does_not_reach_it(
    pg_schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI looks in `public` then, and says it holds no journal there, or lists other
    runs: never this schema's."""

    async def run() -> str:
        agent = Agent(
            "x", model=ScriptedModel(["hello"]), runtime=f"{pg.postgres_dsn()}?schema={pg_schema}"
        )
        try:
            return (await agent.run("hi")).run_id
        finally:
            await agent.aclose()

    run_id = asyncio.run(run())
    main(["runs", "list", "--runtime", pg.postgres_dsn(), "--json"])
    assert run_id not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("?schema=", "empty schema"),
        ("?schema=a&schema=b", "2 times"),
        ("?schema=%00x", "empty schema"),
    ],
)
def test_a_bad_schema_parameter_is_refused_before_connecting(query: str, said: str) -> None:
    with pytest.raises(ConfigError, match=said):
        Agent("x", model=ScriptedModel(["x"]), runtime=f"postgres://nobody@127.0.0.1:1/db{query}")


def test_the_schema_parameter_never_reaches_the_server_and_other_parameters_do() -> None:
    from loomgraph.protocols.backend_specs import split_schema

    dsn, schema = split_schema("postgres://u@h/db?sslmode=disable&schema=loom&connect_timeout=3")
    assert (dsn, schema) == ("postgres://u@h/db?sslmode=disable&connect_timeout=3", "loom")
    assert split_schema("postgres://u@h/db") == ("postgres://u@h/db", None)
    assert split_schema("postgres://u@h/db?schemas=x") == ("postgres://u@h/db?schemas=x", None)
