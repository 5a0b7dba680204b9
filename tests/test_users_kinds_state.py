"""A node kind of the user's own is given what a `function` node is: a copy of the fields it
reads. A change it makes in place fails the node (`StateChangedInPlace`) instead of reaching
the live state unjournaled (the run and its journal, and so a fork or a resume, would
differ), and a field it does not read is `FieldNotRead` naming its `reads:`, not a bare
KeyError. `run_node` finds both, as a run does, and the state's size limit too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent, NodeKind, register_node
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.engine.state_size import StateTooLarge
from loomgraph.engine.users_view import StateChangedInPlace
from loomgraph.models import ScriptedModel
from loomgraph.protocols import RunStatus
from loomgraph.runtime import SqliteRuntime
from loomgraph.testing import run_node


@register_node("users_view_appends")
class _Appends(NodeKind):
    """Appends to the list it reads, in place, and returns nothing."""

    default_reads = ("notes",)
    default_writes = ("notes",)

    async def run(self, state: Any, ctx: Any) -> dict[str, Any]:
        state["notes"].append("sneaky")
        return {}


@register_node("users_view_edits_and_returns")
class _EditsAndReturns(NodeKind):
    """Appends in place and returns the field: the patch carries the change."""

    default_reads = ("notes",)
    default_writes = ("notes",)

    async def run(self, state: Any, ctx: Any) -> dict[str, Any]:
        notes = state["notes"]
        notes.append("kept")
        return {"notes": notes}


@register_node("users_view_reads_more")
class _ReadsMore(NodeKind):
    """Looks up a field it does not read."""

    default_reads = ("notes",)
    default_writes = ("notes",)

    async def run(self, state: Any, ctx: Any) -> dict[str, Any]:
        return {"notes": [*state["notes"], state["secret"]]}


@register_node("users_view_huge")
class _Huge(NodeKind):
    """Returns a value past the state's size limit."""

    default_reads = ("notes",)
    default_writes = ("notes",)

    async def run(self, state: Any, ctx: Any) -> dict[str, Any]:
        return {"notes": ["x" * 20_000_000]}


def graph(kind: str) -> str:
    return f"""
name: g
entry: n
state:
  notes: {{type: 'list[str]', default: [orig]}}
  secret: {{type: str, default: hidden}}
nodes:
  n: {{kind: {kind}}}
  say: {{kind: llm, prompt: 'notes: {{{{ notes }}}}', output: output}}
edges:
  - {{from: n, to: say}}
  - {{from: say, to: END}}
"""


async def run_of(tmp_path: Path, kind: str) -> tuple[Agent, Any]:
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    model = ScriptedModel(["done"])
    agent = Agent("x", model=model, runtime=runtime, architecture=graph_from_yaml(graph(kind)))
    return agent, await agent.run("go")


async def test_a_change_in_place_fails_the_node_and_the_state_stays_the_journals(
    tmp_path: Path,
) -> None:
    agent, result = await run_of(tmp_path, "users_view_appends")
    assert result.status == RunStatus.FAILED
    assert "node 'n' (kind 'users_view_appends') changed 'notes'" in result.reason
    assert "in place" in result.reason
    history = await agent.history(result.run_id)
    assert history[-1].state["notes"] == ["orig"]
    await agent.aclose()


async def test_a_change_in_place_returned_in_the_patch_is_journaled(tmp_path: Path) -> None:
    agent, result = await run_of(tmp_path, "users_view_edits_and_returns")
    assert result.status == RunStatus.COMPLETED, result.reason
    history = await agent.history(result.run_id)
    assert history[-1].state["notes"] == ["orig", "kept"]  # replaced by the patch: once
    await agent.aclose()


async def test_a_field_not_read_is_named_with_the_nodes_reads(tmp_path: Path) -> None:
    agent, result = await run_of(tmp_path, "users_view_reads_more")
    assert result.status == RunStatus.FAILED
    assert "node 'n' looked up 'secret', which is not in its `reads:`" in result.reason
    assert "add 'secret' to the node's `reads:`" in result.reason
    await agent.aclose()


async def test_run_node_finds_a_change_in_place_as_a_run_does() -> None:
    with pytest.raises(StateChangedInPlace, match="changed 'notes'"):
        await run_node(graph_from_yaml(graph("users_view_appends")), "n", {"notes": ["a"]})


async def test_run_node_refuses_a_patch_past_the_state_size_limit_as_a_run_does(
    tmp_path: Path,
) -> None:
    agent, result = await run_of(tmp_path, "users_view_huge")
    assert result.status == RunStatus.FAILED and "limit is 10,000,000" in result.reason
    await agent.aclose()
    with pytest.raises(StateTooLarge, match="limit is 10,000,000"):
        await run_node(graph_from_yaml(graph("users_view_huge")), "n", {"notes": []})
