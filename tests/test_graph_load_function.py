"""`function` nodes: signatures checked at load, reads enforced, no change in place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from graph_problems import problems
from loomgraph import Agent
from loomgraph.models import ScriptedModel

HERE = "tests.test_graph_load_function"


# --------------------------------------------------------------------------- user functions


def no_args() -> dict[str, Any]:
    return {"out": "x"}


def three(state: Any, ctx: Any, extra: Any) -> dict[str, Any]:
    return {"out": "x"}


def keyword_only(*, state: Any) -> dict[str, Any]:
    return {"out": "x"}


def required_keyword(state: Any, *, flag: bool) -> dict[str, Any]:
    return {"out": "x"}


def one(state: Any) -> dict[str, Any]:
    return {"out": "one"}


def with_ctx(state: Any, ctx: Any) -> dict[str, Any]:
    return {"out": "ctx" if ctx is not None else "none"}


def optional_ctx(state: Any, ctx: Any = None) -> dict[str, Any]:
    return {"out": "ctx" if ctx is not None else "none"}


def any_args(*args: Any) -> dict[str, Any]:
    return {"out": str(len(args))}


class Callable_:
    def __call__(self, state: Any) -> dict[str, Any]:
        return {"out": "instance"}


instance = Callable_()


def mutate(state: Any) -> dict[str, Any]:
    state["notes"].append("sneaky")
    return {}


def mutate_nested(state: Any) -> dict[str, Any]:
    state["plan"]["steps"].pop()
    return {}


def assign(state: Any) -> dict[str, Any]:
    state["out"] = "lost"
    return {}


def edit_and_return(state: Any) -> dict[str, Any]:
    steps = state["steps"]
    steps.append("x")
    return {"steps": steps}


def reads_input(state: Any) -> dict[str, Any]:
    return {"out": state["input"]}


def reads_input_softly(state: Any) -> dict[str, Any]:
    return {"out": str(state.get("input"))}


def catches_key_error(state: Any) -> dict[str, Any]:
    try:
        return {"out": state["input"]}
    except KeyError:
        return {"out": "None"}


# --------------------------------------------------------------------------- helpers


def graph_file(tmp_path: Path, node: str, state: str = "", edges: str = "") -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(
        "schema_version: 1\nname: g\nentry: a\n"
        "state:\n  out: {type: str}\n"
        '  notes: {type: "list[str]", reducer: append, default: []}\n'
        '  steps: {type: "list[str]", default: []}\n'
        f"{state}"
        f"nodes:\n  a: {node}\n"
        "  b: {kind: function, call: " + f'"{HERE}:one", reads: [input], writes: [out]}}\n'
        "edges:\n" + (edges or "  - {from: a, to: b}\n  - {from: b, to: END}\n"),
        encoding="utf-8",
    )
    return path


async def run(path: Path) -> Any:
    agent = Agent("x", model=ScriptedModel([]), architecture=str(path))
    result = await agent.run("hello")
    return agent, result


# --------------------------------------------------------------------------- signatures


@pytest.mark.parametrize(
    ("function", "shown"),
    [
        ("no_args", "()"),
        ("three", "(state, ctx, extra)"),
        ("keyword_only", "(*, state)"),
        ("required_keyword", "(state, *, flag)"),
    ],
)
def test_a_function_that_cannot_take_state_is_refused_at_load(
    tmp_path: Path, function: str, shown: str
) -> None:
    node = f'{{kind: function, call: "{HERE}:{function}", reads: [input], writes: [out]}}'
    found = problems(graph_file(tmp_path, node))
    assert len(found) == 1, found
    assert "[kind-check] node 'a'" in found[0]
    assert f"{HERE}:{function}" in found[0]
    assert shown in found[0]
    assert "f(state) or f(state, ctx)" in found[0]


@pytest.mark.parametrize(
    ("function", "out"),
    [
        ("one", "one"),
        ("with_ctx", "ctx"),
        ("optional_ctx", "ctx"),
        ("any_args", "1"),
        ("instance", "instance"),
    ],
)
async def test_functions_that_take_state_run(tmp_path: Path, function: str, out: str) -> None:
    node = f'{{kind: function, call: "{HERE}:{function}", reads: [input], writes: [out]}}'
    agent, result = await run(graph_file(tmp_path, node))
    assert result.status == "completed", result.reason
    history = await agent.history(result.run_id)
    first = next(c for c in history if c.node == "a")
    assert first.patch == {"out": out}


# --------------------------------------------------------------------------- changes in place


async def test_a_change_in_place_fails_the_node_and_never_reaches_the_state(
    tmp_path: Path,
) -> None:
    node = f'{{kind: function, call: "{HERE}:mutate", reads: [notes], writes: [notes]}}'
    # The change in place would make `notes | length > 0` hold on the live state only.
    edges = (
        "  - {from: a, to: END, when: 'notes | length > 0'}\n"
        "  - {from: a, to: b}\n  - {from: b, to: END}\n"
    )
    agent, result = await run(graph_file(tmp_path, node, edges=edges))
    assert result.status == "failed"
    assert "node 'a'" in result.reason
    assert "'notes'" in result.reason
    assert "in place" in result.reason
    assert "patch" in result.reason
    history = await agent.history(result.run_id)
    assert history[-1].state["notes"] == []  # the journal's state: as the run went on


async def test_a_nested_change_in_place_is_found(tmp_path: Path) -> None:
    node = f'{{kind: function, call: "{HERE}:mutate_nested", reads: [plan], writes: [out]}}'
    state = "  plan: {type: any, default: {steps: [one, two]}}\n"
    agent, result = await run(graph_file(tmp_path, node, state=state))
    assert result.status == "failed"
    assert "'plan'" in result.reason and "node 'a'" in result.reason
    history = await agent.history(result.run_id)
    assert history[-1].state["plan"] == {"steps": ["one", "two"]}


async def test_assigning_a_field_of_the_given_state_is_reported(tmp_path: Path) -> None:
    node = f'{{kind: function, call: "{HERE}:assign", reads: [out], writes: [out]}}'
    _, result = await run(graph_file(tmp_path, node))
    assert result.status == "failed"
    assert "'out'" in result.reason and "in place" in result.reason


async def test_a_value_changed_and_returned_in_the_patch_is_written_once(tmp_path: Path) -> None:
    node = f'{{kind: function, call: "{HERE}:edit_and_return", reads: [steps], writes: [steps]}}'
    agent, result = await run(graph_file(tmp_path, node))
    assert result.status == "completed", result.reason
    history = await agent.history(result.run_id)
    assert history[-1].state["steps"] == ["x"]


# --------------------------------------------------------------------------- reads


async def test_reading_a_field_not_in_reads_names_the_node_and_the_field(tmp_path: Path) -> None:
    node = f'{{kind: function, call: "{HERE}:reads_input", writes: [out]}}'
    _, result = await run(graph_file(tmp_path, node))
    assert result.status == "failed"
    assert "node 'a'" in result.reason
    assert "'input'" in result.reason
    assert "reads:" in result.reason


@pytest.mark.parametrize("function", ["reads_input_softly", "catches_key_error"])
async def test_a_field_not_in_reads_still_acts_as_a_missing_key(
    tmp_path: Path, function: str
) -> None:
    node = f'{{kind: function, call: "{HERE}:{function}", writes: [out]}}'
    agent, result = await run(graph_file(tmp_path, node))
    assert result.status == "completed", result.reason
    history = await agent.history(result.run_id)
    assert next(c for c in history if c.node == "a").patch == {"out": "None"}


async def test_a_field_holding_nan_is_not_taken_for_a_change_in_place(tmp_path: Path) -> None:
    """The copy the function gets equals the field (NaN, which equals nothing, included)."""
    import sys
    import types

    from loomgraph.authoring.loader import graph_from_yaml
    from loomgraph.testing import run_node

    module = types.ModuleType("lg_nan_fns")
    module.f = lambda state: {"out": "ok"}  # type: ignore[attr-defined]
    sys.modules["lg_nan_fns"] = module
    graph = graph_from_yaml(
        "name: n\nentry: a\nstate:\n  x: {type: any, default: null}\n"
        "  out: {type: str, default: ''}\n"
        "nodes:\n  a: {kind: function, call: 'lg_nan_fns:f', reads: [x], writes: [out]}\n"
        "edges:\n  - {from: a, to: END}\n"
    )
    ran = await run_node(graph, "a", {"x": float("nan")})
    assert ran.patch == {"out": "ok"}
