"""An approval asked inside a child graph (a `map` branch's `tools` node) is checked before
it is used, as one of the run's own `tools` node is: resumed by an Agent that does not offer
the call's tool, it is refused (`ToolNotOffered`) and the run still waits; resumed by one
that does, the call runs once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent, tool
from loomgraph.agent.resume_errors import ToolNotOffered
from loomgraph.authoring.loader import load_graph_file
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest, RunStatus
from loomgraph.runtime.sqlite import SqliteRuntime
from test_fork_taint import CHILD

PAID: list[str] = []

# The child graph: a model and its tools node, as tests/test_fork_taint.py has it.

PARENT = f"""name: mapped
entry: prep
state:
  items: {{type: 'list[str]'}}
  results: {{type: 'list[str]', default: []}}
nodes:
  prep: {{kind: function, call: '{__name__}:prep', reads: [input], writes: [items]}}
  each: {{kind: map, graph: child.yaml, over: items, output: results, concurrency: 1}}
edges:
  - {{from: prep, to: each}}
  - {{from: each, to: END}}
"""


def prep(state: dict[str, Any]) -> dict[str, Any]:
    """One item: the whole input."""
    return {"items": [state["input"]]}


@tool(destructive=True)
def pay(to: str) -> str:
    """Pay someone (asks a person first: destructive)."""
    PAID.append(to)
    return f"paid {to}"


@tool
def look(q: str) -> str:
    """Look something up."""
    return q


def turn(request: ModelRequest) -> Any:
    """A branch pays its item, then says it did."""
    if request.messages[-1]["role"] == "tool":
        return "paid"
    return {"tool_calls": [{"id": "p1", "tool": "pay", "args": {"to": "acme"}}]}


def make(tmp_path: Path, tools: list[Any]) -> Agent:
    (tmp_path / "child.yaml").write_text(CHILD)
    (tmp_path / "g.yaml").write_text(PARENT)
    return Agent(
        "x",
        model=ScriptedModel(turn),
        tools=tools,
        runtime=SqliteRuntime(tmp_path / "journal.db"),
        architecture=load_graph_file(tmp_path / "g.yaml"),
    )


async def test_an_approval_in_a_map_branch_is_refused_without_its_tool(tmp_path: Path) -> None:
    PAID.clear()
    async with make(tmp_path, [pay]) as asking:
        waiting = await asking.run("acme")
    assert waiting.status == RunStatus.AWAITING_APPROVAL and waiting.pending is not None
    assert waiting.pending.node.startswith("each/") and waiting.pending.node.endswith("/tools")
    async with make(tmp_path, [look]) as other:
        with pytest.raises(ToolNotOffered, match="'pay'"):
            await other.resume(waiting.run_id, approve=True)
        record = await other.deps.runtime.load_run(waiting.run_id)
        assert record is not None and record.status == RunStatus.AWAITING_APPROVAL
    assert PAID == []
    async with make(tmp_path, [pay]) as answering:
        done = await answering.resume(waiting.run_id, approve=True)
    assert done.status == RunStatus.COMPLETED and PAID == ["acme"]
