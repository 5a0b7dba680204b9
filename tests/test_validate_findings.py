"""Findings of issue 16 on graph files: versions, kind suggestions, what node kinds write,
Jinja condition errors, private attributes, and edge numbers that match the diagrams."""

from __future__ import annotations

import pytest

from loomgraph import Agent
from loomgraph.authoring.diagram import edge_text, edges_of
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.errors import ConditionError, GraphValidationError, Problem
from loomgraph.graph.compiled import compile_graph
from loomgraph.graph.registry import NodeKind, node_kind
from loomgraph.models import ScriptedModel


def problems_in(text: str) -> list[Problem]:
    with pytest.raises(GraphValidationError) as caught:
        graph_from_yaml(text, file="inline.yaml")
    return caught.value.problems


def with_edge(when: str, *, state: str = "") -> str:
    return (
        f"name: c\nentry: a\n{state}nodes:\n  a: {{kind: model}}\nedges:\n"
        f"  - from: a\n    to: END\n    when: {when!r}\n  - {{from: a, to: a}}\n"
    ).replace("to: a}", "to: END}")


# --------------------------------------------------------------------------- version, kinds


@pytest.mark.parametrize(
    ("raw", "version"), [("1", "1"), ('"1.2"', "1.2"), ('"2024-01"', "2024-01")]
)
def test_version_accepts_whole_numbers_and_strings(raw: str, version: str) -> None:
    graph = graph_from_yaml(
        f"name: v\nversion: {raw}\nentry: a\nnodes:\n  a: {{kind: model}}\nedges:\n"
        "  - {from: a, to: END}\n"
    )
    assert graph.version == version


def test_kind_in_the_wrong_case_gets_a_suggestion() -> None:
    (problem,) = problems_in(
        "name: k\nentry: a\nnodes:\n  a: {kind: LLM, prompt: hi, output: out}\n"
        "edges:\n  - {from: a, to: END}\n"
    )
    assert problem.rule == "unknown-node-kind" and "did you mean 'llm'?" in problem.message


# --------------------------------------------------------------------------- what kinds write


def test_every_builtin_kind_declares_what_it_writes_itself() -> None:
    for name in ("model", "llm", "map", "subgraph", "structured_output"):
        if name == "structured_output":
            from loomgraph.nodes.structured import FinishNode as kind
        else:
            kind = node_kind(name)  # type: ignore[assignment]
        assert "usage" in kind.implicit_writes
    assert NodeKind.implicit_writes == ()


async def test_model_node_whose_writes_omit_usage_validates_and_runs() -> None:
    graph = graph_from_yaml(
        "name: w\nentry: model\nnodes:\n  model: {kind: model, writes: [messages]}\n"
        "edges:\n  - {from: model, to: END}\n"
    )
    assert "usage" in compile_graph(graph).writes["model"]
    result = await Agent("x", architecture=graph, model=ScriptedModel(["hi"])).run("go")
    assert result.status == "completed" and result.output == "hi"


async def test_llm_node_whose_writes_omit_usage_validates_and_runs() -> None:
    graph = graph_from_yaml(
        "name: w\nentry: ask\nstate:\n  answer: {type: str}\nnodes:\n"
        "  ask: {kind: llm, prompt: 'say {{ input }}', output: answer, writes: [answer]}\n"
        "edges:\n  - {from: ask, to: END}\n"
    )
    result = await Agent("x", architecture=graph, model=ScriptedModel(["hi"])).run("go")
    assert result.status == "completed" and result.usage.output_tokens > 0


def test_writes_that_omit_what_the_kind_always_writes_are_reported() -> None:
    (problem,) = problems_in(
        "name: w\nentry: model\nnodes:\n  model:\n    kind: model\n    writes: [usage]\n"
        "edges:\n  - {from: model, to: END}\n"
    )
    assert problem.rule == "missing-write" and problem.line == 6
    assert "'messages'" in problem.message and "model" in problem.message
    (problem,) = problems_in(
        "name: w\nentry: ask\nstate:\n  answer: {type: str}\n  other: {type: str}\nnodes:\n"
        "  ask: {kind: llm, prompt: hi, output: answer, writes: [other]}\n"
        "edges:\n  - {from: ask, to: END}\n"
    )
    assert problem.rule == "missing-write" and "'answer'" in problem.message


# --------------------------------------------------------------------------- conditions


def test_condition_syntax_errors_say_jinja_and_point_at_the_column() -> None:
    (problem,) = problems_in(with_edge("[m for m in messages] | length > 1"))
    assert problem.rule == "bad-condition"
    assert "Jinja" in problem.message and "not Python" in problem.message
    assert "column 4" in problem.message  # `for` starts at column 4


@pytest.mark.parametrize(
    ("when", "hint"),
    [
        ("len(messages) > 2", "messages | length"),
        ("str(input) == 'x'", "input | string"),
        ("input is None", "is none"),
        ("input is not None", "is not none"),
    ],
)
def test_python_idioms_get_the_jinja_spelling(when: str, hint: str) -> None:
    (problem,) = problems_in(with_edge(when))
    assert problem.rule == "bad-condition", problem
    assert hint in problem.message and "Jinja" in problem.message


def test_a_function_call_is_reported_as_a_call_not_as_a_missing_field() -> None:
    (problem,) = problems_in(with_edge("check(input)"))
    assert problem.rule == "bad-condition"
    assert "calls 'check'" in problem.message and "not a state field" not in problem.message


@pytest.mark.parametrize(
    "when",
    [
        "input in ['a', 'b']",
        "input and not output or visits.a < 3",
        "input is none",
        "output.startswith('yes')",
        "messages | length > 2",
    ],
)
def test_jinja_that_looks_like_python_is_fine(when: str) -> None:
    graph_from_yaml(with_edge(when))


@pytest.mark.parametrize(
    "when", ["input.__class__", "input._private", "input['__class__']", "state._x"]
)
def test_private_attributes_are_refused_at_load(when: str) -> None:
    (problem,) = problems_in(with_edge(when))
    assert problem.rule == "bad-condition" and "_" in problem.message
    assert "starting with _" in problem.message


def test_templates_get_the_same_checks() -> None:
    problems = problems_in(
        "name: t\nentry: ask\nstate:\n  answer: {type: str}\nnodes:\n"
        "  ask: {kind: llm, prompt: '{{ len(input) }} {{ input.__class__ }}', output: answer}\n"
        "edges:\n  - {from: ask, to: END}\n"
    )
    assert {p.rule for p in problems} == {"bad-template"}
    text = " ".join(p.message for p in problems)
    assert "input | length" in text and "starting with _" in text and "Jinja" in text


# --------------------------------------------------------------------------- edge numbers


def test_condition_errors_number_edges_as_the_diagram_does() -> None:
    graph = graph_from_yaml(
        "name: c\nentry: a\nnodes:\n  a: {kind: model}\n  b: {kind: model}\nedges:\n"
        "  - {from: b, to: END}\n"
        "  - {from: a, to: b, when: 'input'}\n"
        "  - {from: a, to: END, when: '1 / 0 > 1'}\n"
        "  - {from: a, to: END}\n"
    )
    with pytest.raises(ConditionError) as err:
        compile_graph(graph).next_node("a", {"messages": [], "input": ""})
    labels = [edge_text(e) for e in edges_of(graph) if e.spec.source == "a"]
    assert labels[1].startswith("[2] ")
    assert "edge [2] from node 'a'" in str(err.value)
    assert "edge #" not in str(err.value)
    assert err.value.position == 2 and err.value.edge == 2
