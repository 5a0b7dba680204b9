"""A backend spec that names nothing to open is refused where the Agent is built, not only on
the command line: `runtime="postgres:"` connected wherever libpq's defaults and the `PG*`
variables pointed (a journal made in a database nobody chose), `sqlite:` opened no file."""

from __future__ import annotations

import pytest

from loomgraph import Agent
from loomgraph.agent.deps import ConfigError


@pytest.mark.parametrize(
    "spec", ["", "  ", "sqlite:", "postgres:", "postgres://", "postgresql:///"]
)
@pytest.mark.parametrize("what", ["runtime", "memory"])
def test_a_spec_naming_nothing_is_refused(
    spec: str, what: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGHOST", "127.0.0.1")  # where an empty DSN would have gone
    with pytest.raises(ConfigError) as refused:
        Agent("x", model="echo", **{what: spec})  # type: ignore[arg-type]
    said = str(refused.value)
    assert said.startswith(what) and ("names no" in said or "empty" in said), said
    assert "give" in said or "write" in said  # what to write instead


@pytest.mark.parametrize("spec", ["postgres://postgres@127.0.0.1/test", "postgresql:///test"])
def test_a_dsn_naming_a_database_is_taken(spec: str) -> None:
    agent = Agent("x", model="echo", runtime=spec)  # connects at its first use, not here
    assert type(agent.deps.runtime).__name__ == "PostgresRuntime"
