"""Graph spec: loading, round trips, the JSON Schema, state types and reducers, conditions."""

from __future__ import annotations

import json

import pytest
from jinja2.exceptions import SecurityError

from loomgraph.authoring.library import UnknownGraph, builtin_names, load_graph
from loomgraph.authoring.loader import graph_from_data, graph_from_yaml, graph_to_yaml
from loomgraph.authoring.schema import SCHEMA_FILE, graph_json_schema
from loomgraph.errors import ConditionError, StateError
from loomgraph.graph.compiled import compile_graph
from loomgraph.graph.conditions import compile_condition, compile_template, condition_scope
from loomgraph.graph.spec import EdgeSpec, Graph, NodeSpec, StateField
from loomgraph.graph.state import StateSchema, TypeSyntaxError, parse_type


def test_react_round_trip_load_dump_load_is_equal() -> None:
    graph = load_graph("react")
    again = graph_from_yaml(graph_to_yaml(graph))
    assert again == graph
    assert again.content_hash() == graph.content_hash()


def test_graph_from_dict_and_built_in_python_are_equal() -> None:
    data = {
        "name": "tiny",
        "entry": "model",
        "nodes": {"model": {"kind": "model"}},
        "edges": [{"from": "model", "to": "END"}],
    }
    from_dict = graph_from_data(data)
    built = Graph(
        name="tiny",
        entry="model",
        nodes={"model": NodeSpec(kind="model")},
        edges=[EdgeSpec(source="model", target="END")],
    )
    assert from_dict == built
    assert graph_from_yaml(graph_to_yaml(built)) == built


def test_line_numbers_are_kept() -> None:
    graph = graph_from_yaml(
        "name: x\nentry: a\nnodes:\n  a:\n    kind: model\nedges:\n  - {from: a, to: END}\n",
        file="x.yaml",
    )
    assert graph.source == "x.yaml"
    assert graph.line_of("nodes", "a", "kind") == 5
    assert graph.line_of("edges", 0) == 7


def test_content_hash_ignores_formatting_but_not_content() -> None:
    a = graph_from_yaml("name: x\nentry: a\nnodes: {a: {kind: model}}\nedges: [{from: a, to: END}]")
    b = graph_from_yaml(
        "# comment\nname: x\nentry: a\nnodes:\n  a:\n    kind: model\n"
        "edges:\n  - from: a\n    to: END\n"
    )
    c = graph_from_yaml("name: y\nentry: a\nnodes: {a: {kind: model}}\nedges: [{from: a, to: END}]")
    assert a.content_hash() == b.content_hash() != c.content_hash()


def test_shipped_json_schema_is_up_to_date_and_describes_graphs() -> None:
    schema = graph_json_schema()
    assert json.loads(SCHEMA_FILE.read_text()) == schema, "run python -m loomgraph.authoring.schema"
    assert {"name", "nodes", "edges", "entry", "state", "limits"} <= set(schema["properties"])
    assert "from" in schema["$defs"]["EdgeSpec"]["properties"]


def test_unknown_architecture_lists_builtins() -> None:
    with pytest.raises(UnknownGraph) as err:
        load_graph("reactt")
    assert "react" in str(err.value) and "built-in graphs" in str(err.value)
    with pytest.raises(UnknownGraph, match="no graph file"):
        load_graph("./missing/graph.yaml")
    assert "react" in builtin_names()


@pytest.mark.parametrize(
    ("text", "good", "bad"),
    [
        ("int", 3, "x"),
        ("list[int]", [1, 2], ["a"]),
        ("dict[str, float]", {"a": 1.5}, {"a": "b"}),
        ("str | None", None, 3),
        ("list[dict[str, bool]]", [{"a": True}], [{"a": "maybe"}]),
    ],
)
def test_type_strings_parse_and_validate(text: str, good: object, bad: object) -> None:
    from pydantic import TypeAdapter, ValidationError

    adapter: TypeAdapter[object] = TypeAdapter(parse_type(text))
    adapter.validate_python(good)
    with pytest.raises(ValidationError):
        adapter.validate_python(bad)


def test_type_strings_import_only_pydantic_models() -> None:
    assert parse_type("loomgraph.graph.spec:StateField") is StateField
    with pytest.raises(TypeSyntaxError):
        parse_type("os:system")
    with pytest.raises(TypeSyntaxError):
        parse_type("lisst[int]")
    with pytest.raises(TypeSyntaxError):
        parse_type("list[int")


def _schema(**fields: StateField) -> StateSchema:
    return StateSchema(Graph(name="s", state=dict(fields)))


def test_reducers() -> None:
    schema = _schema(
        notes=StateField(type="list[str]", reducer="append", default=[]),
        count=StateField(type="int", reducer="add", default=0),
        facts=StateField(type="dict[str, int]", reducer="merge", default={}),
        title=StateField(type="str", default=""),
    )
    state = schema.initial()
    for patch in (
        {"notes": "a", "count": 2, "facts": {"x": 1}, "title": "t1"},
        {"notes": ["b", "c"], "count": 3, "facts": {"y": 2}, "title": "t2"},
    ):
        schema.apply(state, schema.check(dict(patch)))
    assert state["notes"] == ["a", "b", "c"]
    assert state["count"] == 5
    assert state["facts"] == {"x": 1, "y": 2}
    assert state["title"] == "t2"
    schema.apply(state, {"usage": {"input_tokens": 3}})
    schema.apply(state, {"usage": {"input_tokens": 4, "output_tokens": 1}})
    assert state["usage"] == {"input_tokens": 7, "output_tokens": 1}


def test_initial_state_is_never_shared_between_runs() -> None:
    schema = _schema(notes=StateField(type="list[str]", reducer="append", default=[]))
    a, b = schema.initial(), schema.initial()
    schema.apply(a, {"notes": ["x"]})
    assert b["notes"] == [] and a["messages"] is not b["messages"]


def test_bad_patch_values_are_typed_errors() -> None:
    schema = _schema(count=StateField(type="int"))
    with pytest.raises(StateError, match="count"):
        schema.check({"count": "many"})
    with pytest.raises(StateError, match="unknown state field 'nope'"):
        schema.check({"nope": 1})


def test_conditions_see_state_and_last_message() -> None:
    test = compile_condition("last_message.tool_calls | length > 0")
    with_calls = {"messages": [{"role": "assistant", "content": "", "tool_calls": [{}]}]}
    assert test(**condition_scope(with_calls)) is True
    assert test(**condition_scope({"messages": [{"role": "assistant", "content": "hi"}]})) is False
    assert compile_template("Task: {{ input }}")(condition_scope({"input": "x"})) == "Task: x"


def test_conditions_run_no_python() -> None:
    sneaky = compile_condition("input.__class__.__mro__[1].__subclasses__()")
    with pytest.raises(SecurityError):
        sneaky(**condition_scope({"input": "x"}))
    mutate = compile_condition("messages.append(1)")
    with pytest.raises(SecurityError):
        mutate(**condition_scope({"messages": []}))


def test_condition_that_raises_names_node_edge_and_expression() -> None:
    graph = graph_from_yaml(
        "name: c\nentry: a\nnodes:\n  a: {kind: model}\nedges:\n"
        "  - {from: a, to: END, when: '1 / 0 > 1'}\n  - {from: a, to: END}\n"
    )
    with pytest.raises(ConditionError) as err:
        compile_graph(graph).next_node("a", {"messages": []})
    assert err.value.node == "a" and err.value.edge == 0
    assert err.value.expression == "1 / 0 > 1" and "1 / 0 > 1" in str(err.value)
