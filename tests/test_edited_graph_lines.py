"""A graph edited after it was read from a file is no longer what the file says: its
problems name no file line (they named the untouched file's line, `graphs/react.yaml:7`
for an entry the file has right). What it reads next to the file still resolves there."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from loomgraph.authoring.library import load_graph
from loomgraph.authoring.loader import load_graph_file
from loomgraph.errors import GraphValidationError

FLOW = """\
schema_version: 1
name: flow
state:
  count: {type: int, default: 0}
entry: step
nodes:
  step: {kind: function, call: "helpers:step", writes: [count]}
edges:
  - {from: step, to: END}
"""


def problems_of(graph: object) -> list[tuple[str, str | None, int | None]]:
    """(rule, file, line) of each problem `load_graph` finds in `graph`."""
    with pytest.raises(GraphValidationError) as err:
        load_graph(graph)  # type: ignore[arg-type]
    return [(p.rule, p.file, p.line) for p in err.value.problems]


def test_an_edited_builtin_names_no_file_line() -> None:
    graph = load_graph("react")
    graph.entry = "nope"
    assert problems_of(graph) == [("unknown-entry", None, None)]
    shown = r"^invalid graph .*\n  <graph>: \[unknown-entry\]"
    with pytest.raises(GraphValidationError, match=shown):
        load_graph(graph)


def test_an_edited_node_names_no_file_line() -> None:
    graph = load_graph("react")
    graph.nodes["model"].reads = ["nosuch"]
    assert problems_of(graph) == [("undefined-read", None, None)]


def flow_file(folder: Path, text: str = FLOW) -> Path:
    """flow.yaml in `folder`, with the helpers module its function node calls beside it."""
    (folder / "helpers.py").write_text(
        textwrap.dedent(
            """\
            def step(state):
                return {"count": 1}
            """
        )
    )
    (folder / "flow.yaml").write_text(text)
    return folder / "flow.yaml"


def test_the_file_itself_still_names_its_lines(tmp_path: Path) -> None:
    path = flow_file(tmp_path, FLOW.replace("entry: step", "entry: stpe"))
    with pytest.raises(GraphValidationError) as err:
        load_graph_file(path)
    assert [(p.rule, p.file, p.line) for p in err.value.problems] == [
        ("unknown-entry", str(path), 5)
    ]


def test_an_edited_file_graph_still_imports_next_to_its_file(tmp_path: Path) -> None:
    graph = load_graph_file(flow_file(tmp_path))
    graph.limits.max_visits = 7
    assert load_graph(graph) is graph  # the edit is valid: `helpers` found beside the file
    graph.entry = "gone"
    assert problems_of(graph) == [("unknown-entry", None, None)]


def test_a_second_edit_is_seen_too() -> None:
    graph = load_graph("react")
    graph.limits.max_visits = 3
    load_graph(graph)
    graph.entry = "nope"
    assert problems_of(graph) == [("unknown-entry", None, None)]


def test_a_graph_that_is_not_json_is_still_validated() -> None:
    """Its content cannot be compared (an object among a node's params): it is read and its
    problems reported, not a serialisation error."""
    from loomgraph.authoring.loader import graph_from_data

    data = {
        "name": "g",
        "entry": "n",
        "nodes": {"n": {"kind": "llm", "prompt": "x", "output": "output", "odd": object()}},
        "edges": [{"from": "n", "to": "END"}],
    }
    with pytest.raises(GraphValidationError) as err:
        graph_from_data(data)
    assert err.value.rules == {"bad-params"}
