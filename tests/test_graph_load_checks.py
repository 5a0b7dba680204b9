"""Load checks of node keys and edge conditions: `visits` of nodes, misspelt common keys,
conditions on fields that are never set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from graph_problems import problems
from loomgraph import Agent
from loomgraph.authoring.loader import load_graph_file
from loomgraph.graph.condition_code import compile_native
from loomgraph.graph.conditions import compile_condition, environment
from loomgraph.models import ScriptedModel

HERE = "tests.test_graph_load_checks"


def say(state: Any) -> dict[str, Any]:
    return {"out": "said"}


def graph_file(tmp_path: Path, edges: str, *, node_a: str = "", state: str = "") -> Path:
    path = tmp_path / "g.yaml"
    a = node_a or f'{{kind: function, call: "{HERE}:say", reads: [input], writes: [out]}}'
    path.write_text(
        "schema_version: 1\nname: g\nentry: a\n"
        "state:\n  out: {type: str}\n  flag: {type: bool, default: false}\n"
        f"{state}"
        f"nodes:\n  a: {a}\n"
        f'  b: {{kind: function, call: "{HERE}:say", reads: [input], writes: [out]}}\n'
        f"edges:\n{edges}",
        encoding="utf-8",
    )
    return path


async def run(path: Path) -> tuple[Agent, Any]:
    agent = Agent("x", model=ScriptedModel([]), architecture=str(path))
    return agent, await agent.run("hello")


# --------------------------------------------------------------------------- visits


@pytest.mark.parametrize(
    "when",
    [
        "visits.b < 3",
        "visits['b'] < 3",
        "visits.b == 0 and out.startswith('sa')",  # a method call: Jinja's compiled form
    ],
)
async def test_a_node_not_yet_visited_counts_zero(tmp_path: Path, when: str) -> None:
    edges = f'  - {{from: a, to: b, when: "{when}"}}\n  - {{from: a, to: END}}\n'
    edges += "  - {from: b, to: END}\n"
    agent, result = await run(graph_file(tmp_path, edges))
    assert result.status == "completed", result.reason
    history = await agent.history(result.run_id)
    assert [c.node for c in history if c.seq] == ["a", "b"]


def test_visits_of_a_visited_node_are_its_count() -> None:
    test = compile_condition("visits.b == 2 and visits.a == 0")
    assert test(visits={"b": 2}) is True
    assert test(visits={"b": 1}) is False


def test_visits_conditions_stay_compiled_to_closures() -> None:
    # The native form is what keeps a condition cheap on every turn.
    assert compile_native(environment(), "visits.b < 3", counts="visits") is not None
    assert compile_native(environment(), "visits['b'] < 3", counts="visits") is not None


@pytest.mark.parametrize(
    ("when", "name", "hint"),
    [("visits.aa < 3", "aa", "'a'"), ("visits['bb'] > 1", "bb", "'b'")],
)
def test_visits_of_a_name_that_is_no_node_is_refused(
    tmp_path: Path, when: str, name: str, hint: str
) -> None:
    edges = f'  - {{from: a, to: b, when: "{when}"}}\n  - {{from: a, to: END}}\n'
    edges += "  - {from: b, to: END}\n"
    found = problems(graph_file(tmp_path, edges))
    assert len(found) == 1, found
    assert "g.yaml:11:" in found[0]  # the line of the edge
    assert "[undefined-read]" in found[0]
    assert "edge from 'a' to 'b'" in found[0]
    assert f"visits.{name}" in found[0] or f"visits['{name}']" in found[0]
    assert f"{name!r} is not a node" in found[0]
    assert f"did you mean {hint}?" in found[0]


# --------------------------------------------------------------------------- common keys


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("reeds: [input]", "reads"), ("on_eror: b", "on_error"), ("retries: {attempts: 2}", "retry")],
)
def test_a_misspelt_common_key_suggests_it(tmp_path: Path, typo: str, meant: str) -> None:
    node = f'{{kind: function, call: "{HERE}:say", {typo}, writes: [out]}}'
    edges = "  - {from: a, to: b}\n  - {from: b, to: END}\n"
    found = problems(graph_file(tmp_path, edges, node_a=node))
    assert len(found) == 1, found
    assert "[bad-params] node 'a' (function)" in found[0]
    assert f"did you mean {meant!r}?" in found[0]
    assert "on_error" in found[0] and "max_visits" in found[0]  # the common keys
    assert "call" in found[0]  # and the kind's own


def test_a_misspelt_param_of_the_kind_suggests_it(tmp_path: Path) -> None:
    node = f'{{kind: function, cal: "{HERE}:say", reads: [input], writes: [out]}}'
    edges = "  - {from: a, to: b}\n  - {from: b, to: END}\n"
    found = problems(graph_file(tmp_path, edges, node_a=node))
    assert any("param 'cal'" in p and "did you mean 'call'?" in p for p in found), found


# --------------------------------------------------------------------------- unset fields


def test_a_condition_on_a_field_nothing_sets_is_refused(tmp_path: Path) -> None:
    edges = '  - {from: a, to: b, when: "score > 0.5"}\n  - {from: a, to: END}\n'
    edges += "  - {from: b, to: END}\n"
    found = problems(graph_file(tmp_path, edges, state="  score: {type: float}\n"))
    assert len(found) == 1, found
    assert "g.yaml:12:" in found[0]
    assert "[undefined-read]" in found[0]
    assert "edge from 'a' to 'b'" in found[0]
    assert "'score'" in found[0]
    assert "default" in found[0] and "writes" in found[0]


@pytest.mark.parametrize(
    "field",
    [
        "score: {type: float, default: 0.0}",  # a default
        'score: {type: "float | None"}',  # None is a value of its type
        "score: {type: any}",
    ],
)
def test_a_condition_on_a_field_with_a_value_is_fine(tmp_path: Path, field: str) -> None:
    edges = '  - {from: a, to: b, when: "score is none or score > 0.5"}\n'
    edges += "  - {from: a, to: END}\n  - {from: b, to: END}\n"
    load_graph_file(graph_file(tmp_path, edges, state=f"  {field}\n"))


def test_a_condition_on_a_field_a_node_writes_is_fine(tmp_path: Path) -> None:
    edges = "  - {from: a, to: b, when: \"out == 'said'\"}\n  - {from: a, to: END}\n"
    edges += "  - {from: b, to: END}\n"
    load_graph_file(graph_file(tmp_path, edges))
