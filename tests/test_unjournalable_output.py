"""A node that writes a value the journal cannot keep (NaN, infinity, an object) ends its run
`failed` with a reason naming the node and the field; before, the journal refused the
transition, the caller got a bare journal error, and the run stayed `running` for ever."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.engine.state_size import StateNotJson
from loomgraph.protocols import RunStatus
from loomgraph.runtime import SqliteRuntime
from loomgraph.runtime.memory import InMemoryRuntime

GRAPH = """
name: unjournalable
entry: s
state:
  score: {type: "%s"}
nodes:
  s: {kind: function, call: "lg_unjournalable:%s", writes: [score]}
edges:
  - {from: s, to: END}
"""

VALUES: dict[str, Any] = {
    "nan": math.nan,
    "inf": math.inf,
    "nested_nan": [1.0, -math.inf],
    "an_object": {"at": object()},
}


def _writes(value: Any, field: str = "score") -> Any:
    def node(state: Any) -> dict[str, Any]:
        return {field: value}

    return node


def _graph(field_type: str, fn: str) -> Any:
    module = types.ModuleType("lg_unjournalable")
    for name, value in VALUES.items():
        setattr(module, name, _writes(value))
    sys.modules["lg_unjournalable"] = module
    return graph_from_yaml(GRAPH % (field_type, fn))


CASES = [
    ("float", "nan"),
    ("float", "inf"),
    ("list[float]", "nested_nan"),
    ("any", "nan"),
    ("any", "nested_nan"),
    ("any", "an_object"),
]


def _runtime(kind: str, tmp_path: Path) -> InMemoryRuntime | SqliteRuntime:
    return InMemoryRuntime() if kind == "memory" else SqliteRuntime(str(tmp_path / "j.db"))


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize(("field_type", "fn"), CASES)
async def test_a_value_the_journal_cannot_keep_fails_the_run(
    tmp_path: Path, field_type: str, fn: str, kind: str
) -> None:
    # The in-memory journal keeps objects as they are, yet refuses what a durable one
    # refuses: a run behaves the same on all of them.
    runtime = _runtime(kind, tmp_path)
    agent = Agent("x", model="echo", architecture=_graph(field_type, fn), runtime=runtime)
    try:
        result = await agent.run("go")
        assert result.status == RunStatus.FAILED
        assert "'s'" in result.reason and "score" in result.reason, result.reason
        if field_type == "any":
            expected = StateNotJson("s", "score", "")
            assert result.reason.startswith(str(expected)), result.reason
        record = await runtime.load_run(result.run_id)
        assert record is not None and record.status == RunStatus.FAILED  # not left running
        assert await runtime.transitions(result.run_id) == []  # nothing of it was written
    finally:
        await agent.aclose()


CHILD = """
name: child
entry: s
state:
  score: {type: any}
nodes:
  s: {kind: function, call: "lg_unjournalable:an_object", writes: [score]}
edges:
  - {from: s, to: END}
"""

PARENT = """
name: parent
entry: sub
nodes:
  sub: {kind: subgraph, graph: child.yaml}
edges:
  - {from: sub, to: END}
"""


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_child_graphs_value_the_journal_cannot_keep_fails_the_run(
    tmp_path: Path, kind: str
) -> None:
    _graph("any", "an_object")  # the module the child's node calls
    (tmp_path / "child.yaml").write_text(CHILD, encoding="utf-8")
    (tmp_path / "parent.yaml").write_text(PARENT, encoding="utf-8")
    runtime = _runtime(kind, tmp_path)
    agent = Agent("x", model="echo", architecture=str(tmp_path / "parent.yaml"), runtime=runtime)
    try:
        result = await agent.run("go")
        assert result.status == RunStatus.FAILED, result.reason
        expected = StateNotJson("sub/s", "score", "")
        assert result.reason.startswith(str(expected)), result.reason
        assert await runtime.transitions(result.run_id) == []  # nothing of it was written
    finally:
        await agent.aclose()


async def test_a_typed_float_field_refuses_nan_as_a_state_error_the_graph_can_route() -> None:
    agent = Agent("x", model="echo", architecture=_graph("float", "nan"))
    result = await agent.run("go")
    assert result.status == RunStatus.FAILED
    assert "state field 'score'" in result.reason and "finite" in result.reason, result.reason


OUTPUT_GRAPH = """
name: unjournalable-output
entry: s
nodes:
  s: {kind: function, call: "lg_unjournalable_output:answer", writes: [output]}
edges:
  - {from: s, to: END}
"""


async def test_an_output_the_journal_cannot_keep_still_ends_the_run(tmp_path: Path) -> None:
    """The run's answer is journaled with its end: a NaN written to `output` must not leave
    the run `running` either."""
    module = types.ModuleType("lg_unjournalable_output")
    module.answer = _writes(math.nan, "output")  # type: ignore[attr-defined]
    sys.modules["lg_unjournalable_output"] = module
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    graph = graph_from_yaml(OUTPUT_GRAPH)
    agent = Agent("x", model="echo", architecture=graph, runtime=runtime)
    try:
        result = await agent.run("go")
        assert result.status == RunStatus.FAILED
        assert "'output'" in result.reason, result.reason
        record = await runtime.load_run(result.run_id)
        assert record is not None and record.status == RunStatus.FAILED
    finally:
        await agent.aclose()
