"""`map` and `subgraph` nodes: their paths and field mappings checked against the parent
and the child graph at load, and a missing part of `over` failing the node at run time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from graph_problems import problems
from loomgraph import Agent
from loomgraph.models import ScriptedModel

HERE = "tests.test_graph_load_children"
GRAPHS = Path(__file__).parent.parent / "graphs"

CHILD = f"""\
schema_version: 1
name: child
entry: work
state:
  topic: {{type: str, default: ""}}
  n: {{type: int, default: 0}}
nodes:
  work: {{kind: function, call: "{HERE}:work", reads: [input, topic], writes: [output, n]}}
edges:
  - {{from: work, to: END}}
"""


def work(state: Any) -> dict[str, Any]:
    return {"output": f"{state['input']}|{state['topic']}", "n": 1}


def make_plan(state: Any) -> dict[str, Any]:
    return {"plan": {"steps": state["input"].split()}, "steps": state["input"].split()}


def parent_file(tmp_path: Path, node: str, *, plan_type: str = "any") -> Path:
    (tmp_path / "child.yaml").write_text(CHILD, encoding="utf-8")
    path = tmp_path / "parent.yaml"
    path.write_text(
        "schema_version: 1\nname: parent\nentry: plan\nstate:\n"
        f"  plan: {{type: {plan_type!r}}}\n"
        '  steps: {type: "list[str]", default: []}\n'
        '  numbers: {type: "list[int]", default: []}\n'
        '  results: {type: "list[str]", reducer: append, default: []}\n'
        "  count: {type: int, default: 0}\n"
        '  title: {type: str, default: ""}\n'
        "nodes:\n"
        f'  plan: {{kind: function, call: "{HERE}:make_plan", reads: [input], '
        "writes: [plan, steps]}\n"
        f"  each: {node}\n"
        "edges:\n  - {from: plan, to: each}\n  - {from: each, to: END}\n",
        encoding="utf-8",
    )
    return path


async def run(path: Path, prompt: str) -> tuple[Agent, Any]:
    agent = Agent("x", model=ScriptedModel([]), architecture=str(path))
    return agent, await agent.run(prompt)


# --------------------------------------------------------------------------- map over


def test_the_builtin_plan_execute_with_a_misspelt_path_is_refused(tmp_path: Path) -> None:
    text = (GRAPHS / "plan_execute.yaml").read_text(encoding="utf-8")
    path = tmp_path / "pe.yaml"
    path.write_text(text.replace("over: plan.steps", "over: plan.step"), encoding="utf-8")
    found = problems(path)
    assert len(found) == 2, found  # both map nodes
    for problem in found:
        assert "[kind-check]" in problem
        assert "'plan.step'" in problem
        assert "no field 'step'" in problem
        assert "did you mean 'steps'?" in problem
    assert "node 'execute_parallel'" in found[0] and "node 'execute_serial'" in found[1]


@pytest.mark.parametrize(
    ("over", "said"),
    [
        ("plan.answer", "'plan.answer', which is a str, not a list"),
        ("steps.first", "'steps' is a list[str]: it has no field 'first'"),
    ],
)
def test_map_over_a_path_that_is_no_list_is_refused(tmp_path: Path, over: str, said: str) -> None:
    node = f"{{kind: map, graph: child.yaml, over: {over}, output: results}}"
    found = problems(parent_file(tmp_path, node, plan_type="loomgraph.strategies:Plan"))
    assert len(found) == 1, found
    assert "node 'each'" in found[0] and said in found[0]


def test_map_over_a_field_its_reads_leave_out_is_refused(tmp_path: Path) -> None:
    node = "{kind: map, graph: child.yaml, over: steps, output: results, reads: [input]}"
    found = problems(parent_file(tmp_path, node))
    assert len(found) == 1, found
    assert "node 'each'" in found[0] and "'steps'" in found[0] and "reads:" in found[0]


async def test_a_missing_part_of_the_path_fails_the_node_naming_it(tmp_path: Path) -> None:
    node = "{kind: map, graph: child.yaml, over: plan.step, output: results}"
    agent, result = await run(parent_file(tmp_path, node), "a b")
    assert result.status == "failed"
    assert "node 'each'" in result.reason
    assert "'plan.step'" in result.reason
    assert "no 'step'" in result.reason
    history = await agent.history(result.run_id)
    assert not [c for c in history if c.node.startswith("each")]


async def test_a_path_to_a_value_that_is_not_a_list_fails_the_node(tmp_path: Path) -> None:
    node = "{kind: map, graph: child.yaml, over: plan, output: results}"
    _, result = await run(parent_file(tmp_path, node), "a b")
    assert result.status == "failed"
    assert "node 'each'" in result.reason and "'plan'" in result.reason
    assert "dict" in result.reason


@pytest.mark.parametrize(("prompt", "results"), [("a b", ["a|", "b|"]), ("", [])])
async def test_a_path_to_a_list_maps_its_items(
    tmp_path: Path, prompt: str, results: list[str]
) -> None:
    node = "{kind: map, graph: child.yaml, over: plan.steps, output: results}"
    agent, result = await run(parent_file(tmp_path, node), prompt)
    assert result.status == "completed", result.reason
    history = await agent.history(result.run_id)
    assert history[-1].state["results"] == results


# --------------------------------------------------------------------------- field mappings


@pytest.mark.parametrize(
    ("node", "said"),
    [
        (
            "{kind: subgraph, graph: child.yaml, inputs: {inptu: input}}",
            "inputs: 'inptu' is not a field of graph 'child' (did you mean 'input'?)",
        ),
        (
            "{kind: subgraph, graph: child.yaml, outputs: {title: outptu}}",
            "outputs: 'outptu' is not a field of graph 'child' (did you mean 'output'?)",
        ),
        (
            "{kind: map, graph: child.yaml, over: steps, output: results, item: inptu}",
            "item: 'inptu' is not a field of graph 'child' (did you mean 'input'?)",
        ),
        (
            "{kind: map, graph: child.yaml, over: steps, output: results, result: outptu}",
            "result: 'outptu' is not a field of graph 'child' (did you mean 'output'?)",
        ),
        (
            "{kind: map, graph: child.yaml, over: steps, output: results, inputs: {topik: title}}",
            "inputs: 'topik' is not a field of graph 'child' (did you mean 'topic'?)",
        ),
        (
            "{kind: map, graph: child.yaml, over: steps, output: count}",
            "output: 'count' is a int, but a map writes a list of results",
        ),
        (
            "{kind: subgraph, graph: child.yaml, inputs: {input: steps}}",
            "inputs: 'steps' (list[str]) into 'input' of graph 'child' (str)",
        ),
        (
            "{kind: subgraph, graph: child.yaml, outputs: {steps: n}}",
            "outputs: 'n' of graph 'child' (int) into 'steps' (list[str])",
        ),
        (
            "{kind: map, graph: child.yaml, over: numbers, output: results, item: topic}",
            "item: an item of 'numbers' (int) into 'topic' of graph 'child' (str)",
        ),
        (
            "{kind: subgraph, graph: child.yaml, inputs: {topic: title}, reads: [input]}",
            "inputs: 'title' is not in the node's `reads:`",
        ),
    ],
)
def test_field_mappings_are_checked_against_both_graphs(
    tmp_path: Path, node: str, said: str
) -> None:
    found = problems(parent_file(tmp_path, node))
    assert len(found) == 1, found
    assert "[kind-check] node 'each'" in found[0]
    assert said in found[0]


async def test_mappings_that_fit_load_and_run(tmp_path: Path) -> None:
    node = (
        "{kind: map, graph: child.yaml, over: steps, output: results, item: topic, "
        "inputs: {input: title}, result: output}"
    )
    agent, result = await run(parent_file(tmp_path, node), "a b")
    assert result.status == "completed", result.reason
    history = await agent.history(result.run_id)
    assert history[-1].state["results"] == ["|a", "|b"]


async def test_a_subgraph_mapping_typed_fields_runs(tmp_path: Path) -> None:
    node = (
        "{kind: subgraph, graph: child.yaml, inputs: {input: input, topic: title}, "
        "outputs: {title: output, count: n}}"
    )
    agent, result = await run(parent_file(tmp_path, node), "go")
    assert result.status == "completed", result.reason
    history = await agent.history(result.run_id)
    assert history[-1].state["title"] == "go|"
    assert history[-1].state["count"] == 1
