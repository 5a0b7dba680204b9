"""Load-time graph validation: one bad file per rule, each problem at its exact line.

Every file under tests/graphs/bad/ marks the lines where problems are expected with a
`# <- rule` comment; a test asserts that exactly those (rule, line) pairs are reported.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loomgraph.authoring.library import builtin_dir, load_graph
from loomgraph.authoring.loader import graph_from_data, graph_from_yaml, load_graph_file
from loomgraph.authoring.validate import validate_graph
from loomgraph.authoring.validate_flow import check_flow
from loomgraph.errors import GraphValidationError, Problem
from loomgraph.graph.spec import Graph

HERE = Path(__file__).parent
BAD = HERE / "graphs" / "bad"
GOOD = HERE / "graphs" / "good"
MARK = re.compile(r"#\s*<-\s*([a-z-]+)")

# file stem -> the rule it is about (the files are named after their rule)
RULE_FILES = [
    # validate.py / validate_flow.py
    "schema-version",
    "unknown-node-kind",
    "bad-params",
    "kind-check",
    "missing-entry",
    "unknown-entry",
    "unknown-endpoint",
    "unreachable-node",
    "no-path-to-end",
    "cycle-without-exit",
    "shadowed-edge",
    "undefined-read",
    "undeclared-write",
    "missing-write",
    "bad-condition",
    "bad-template",
    "bad-type",
    "bad-reducer-type",
    "reserved-name",
    "no-nodes",
    "bad-retry",
    # the loader
    "yaml-syntax",
    "yaml-alias",
    "yaml-key",
    "duplicate-name",
    "not-a-mapping",
    "schema",
]


def expected(path: Path) -> set[tuple[str, int]]:
    """The (rule, line) pairs marked `# <- rule` in a graph file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return {(m.group(1), n) for n, text in enumerate(lines, 1) if (m := MARK.search(text))}


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(GraphValidationError) as caught:
        load_graph_file(path)
    return caught.value.problems


def load_text(text: str) -> Graph:
    return graph_from_yaml(text, file="inline.yaml")


def problems_in(text: str) -> list[Problem]:
    with pytest.raises(GraphValidationError) as caught:
        load_text(text)
    return caught.value.problems


def rules_and_lines(problems: list[Problem]) -> set[tuple[str, int | None]]:
    return {(p.rule, p.line) for p in problems}


# --------------------------------------------------------------------------- one file per rule


@pytest.mark.parametrize("rule", RULE_FILES)
def test_each_rule_reports_its_file_and_exact_line(rule: str) -> None:
    path = BAD / f"{rule}.yaml"
    marks = expected(path)
    assert (rule, min(line for r, line in marks if r == rule)) in marks
    problems = problems_of(path)
    assert rules_and_lines(problems) == marks
    assert all(p.file == str(path) for p in problems)
    assert all(f"{path}:{p.line}: [{p.rule}] " in str(p) for p in problems)


def test_every_bad_file_is_tested() -> None:
    tested = {*RULE_FILES, "many-problems", "subgraph-cycle", "unreadable-file"}
    assert {p.stem for p in BAD.glob("*.yaml")} == tested


def test_many_problems_are_all_reported_at_once_in_line_order() -> None:
    path = BAD / "many-problems.yaml"
    problems = problems_of(path)
    assert rules_and_lines(problems) == expected(path)
    assert len(problems) == len(expected(path)) == 10
    lines = [p.line or 0 for p in problems]
    assert lines == sorted(lines)


def test_unreadable_file() -> None:
    for path in (BAD / "unreadable-file.yaml", BAD / "no-such-file.yaml"):
        (problem,) = problems_of(path)
        assert (problem.rule, problem.file, problem.line) == ("unreadable-file", str(path), None)


def test_yaml_too_large(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("name: huge\n" + "# padding\n" * 120_000, encoding="utf-8")
    (problem,) = problems_of(path)
    assert (problem.rule, problem.file) == ("yaml-too-large", str(path))


def test_a_graph_that_runs_itself_as_a_subgraph_is_refused() -> None:
    path = BAD / "subgraph-cycle.yaml"
    (problem,) = problems_of(path)
    assert (problem.rule, problem.file, problem.line) == ("kind-check", str(path), 6)
    assert "[subgraph-cycle]" in problem.message


def test_messages_say_what_is_known() -> None:
    (kind,) = problems_of(BAD / "unknown-node-kind.yaml")
    assert "did you mean 'model'?" in kind.message
    registered = kind.message.partition("registered kinds: ")[2].split(", ")
    assert {"function", "llm", "model", "subgraph", "tools"} <= set(registered)
    (version,) = problems_of(BAD / "schema-version.yaml")
    assert "supported: 1" in version.message
    (entry,) = problems_of(BAD / "unknown-entry.yaml")
    assert "did you mean 'model'?" in entry.message


# --------------------------------------------------------------------------- valid graphs


def test_builtin_react_graph_validates_cleanly() -> None:
    graph = load_graph_file(builtin_dir() / "react.yaml")
    assert validate_graph(graph) == []
    assert load_graph("react").name == "react"


@pytest.mark.parametrize("path", sorted(GOOD.glob("*.yaml")), ids=lambda p: p.stem)
def test_good_graphs_validate_cleanly(path: Path) -> None:
    assert validate_graph(load_graph_file(path)) == []


def test_every_builtin_graph_validates_cleanly() -> None:
    for path in builtin_dir().glob("*.yaml"):
        assert validate_graph(load_graph_file(path)) == [], path


# --------------------------------------------------------------------------- nothing runs


def test_library_refuses_a_bad_file() -> None:
    with pytest.raises(GraphValidationError) as caught:
        load_graph(BAD / "cycle-without-exit.yaml")
    assert caught.value.rules == {"cycle-without-exit"}
    with pytest.raises(GraphValidationError):  # not cached as valid by the first attempt
        load_graph(str(BAD / "cycle-without-exit.yaml"))


def test_an_agent_cannot_be_built_from_a_bad_file() -> None:
    from loomgraph.agent.agent import Agent
    from loomgraph.models.echo import EchoModel

    with pytest.raises(GraphValidationError):
        Agent(model=EchoModel(), architecture=BAD / "unknown-node-kind.yaml")


def test_graphs_built_from_data_are_validated_too() -> None:
    data = {
        "name": "d",
        "entry": "a",
        "nodes": {"a": {"kind": "model"}},
        "edges": [{"from": "a", "to": "a"}],
    }
    with pytest.raises(GraphValidationError) as caught:
        graph_from_data(data)
    (problem,) = caught.value.problems
    assert (problem.rule, problem.file, problem.line) == ("cycle-without-exit", None, None)
    assert str(problem).startswith("<graph>: [cycle-without-exit] ")


# --------------------------------------------------------------------------- flow semantics

HEAD = """\
name: g
entry: a
nodes:
  a: {kind: model}
  b: {kind: tools}
edges:
"""


def test_a_loop_with_a_conditional_exit_is_fine() -> None:
    graph = load_text(
        HEAD
        + """\
  - {from: a, to: b, when: "last_message.tool_calls"}
  - {from: a, to: END}
  - {from: b, to: a}
"""
    )
    assert validate_graph(graph) == []


def test_a_loop_whose_conditions_all_stay_inside_has_no_exit() -> None:
    problems = problems_in(
        HEAD
        + """\
  - {from: a, to: b, when: "last_message.tool_calls"}
  - {from: a, to: b}
  - {from: b, to: a}
"""
    )
    assert rules_and_lines(problems) == {("cycle-without-exit", 8)}
    assert "'a' -> 'b'" in problems[0].message


def test_a_node_without_an_unconditional_edge_falls_through_to_end() -> None:
    load_text(
        HEAD
        + """\
  - {from: a, to: b, when: "last_message.tool_calls"}
  - {from: b, to: a}
"""
    )


def test_a_node_without_edges_ends_the_run() -> None:
    load_text(HEAD + "  - {from: a, to: b}\n")


def test_a_self_loop_without_condition_is_flagged() -> None:
    problems = problems_in(HEAD + "  - {from: a, to: a}\n  - {from: b, to: END}\n")
    assert rules_and_lines(problems) == {("cycle-without-exit", 7), ("unreachable-node", 5)}
    assert any("node 'a' loops to itself" in p.message for p in problems)


def test_a_shadowed_exit_does_not_count_as_a_way_out() -> None:
    problems = problems_in(
        HEAD
        + """\
  - {from: a, to: b}
  - {from: a, to: END, when: "last_message.content"}
  - {from: b, to: a}
"""
    )
    assert rules_and_lines(problems) == {("cycle-without-exit", 7), ("shadowed-edge", 8)}


def test_no_path_to_end_names_the_loop_ahead() -> None:
    problems = problems_in("""\
name: g
entry: a
nodes:
  a: {kind: model}
  b: {kind: model}
  c: {kind: tools}
edges:
  - {from: a, to: b}
  - {from: b, to: c}
  - {from: c, to: b}
""")
    assert rules_and_lines(problems) == {("no-path-to-end", 4), ("cycle-without-exit", 9)}
    (no_end,) = (p for p in problems if p.rule == "no-path-to-end")
    assert "'b', 'c'" in no_end.message


def test_an_unknown_target_is_not_reported_again_as_a_loop() -> None:
    problems = problems_in(HEAD + "  - {from: a, to: b}\n  - {from: b, to: nowhere}\n")
    assert rules_and_lines(problems) == {("unknown-endpoint", 8)}


def test_edges_from_end_and_to_lowercase_end() -> None:
    problems = problems_in(HEAD + "  - {from: a, to: end}\n  - {from: END, to: a}\n")
    assert rules_and_lines(problems) == {
        ("unreachable-node", 5),
        ("unknown-endpoint", 7),
        ("unknown-endpoint", 8),
    }
    problems = [p for p in problems if p.rule == "unknown-endpoint"]
    assert "did you mean END?" in problems[0].message
    assert "cannot start at END" in problems[1].message


def test_a_node_named_end_is_reserved() -> None:
    problems = problems_in("""\
name: g
entry: a
nodes:
  a: {kind: model}
  END: {kind: model}
edges:
  - {from: a, to: END}
""")
    assert ("reserved-name", 5) in rules_and_lines(problems)


def test_flow_checks_are_quick_on_a_large_graph() -> None:
    import time

    n = 2000
    data = {
        "name": "big",
        "entry": "n0",
        "nodes": {f"n{i}": {"kind": "model"} for i in range(n)},
        "edges": [{"from": f"n{i}", "to": f"n{i + 1}"} for i in range(n - 1)]
        + [{"from": f"n{n - 1}", "to": "END"}],
    }
    started = time.perf_counter()
    graph = graph_from_data(data)
    assert check_flow(graph) == []
    assert time.perf_counter() - started < 5


# --------------------------------------------------------------------------- fields and kinds


def test_template_names_must_be_fields() -> None:
    problems = problems_in("""\
name: g
entry: a
nodes:
  a:
    kind: llm
    prompt: "Summarise {{ input }} using {{ notse }}"
    output: output
""")
    (problem,) = problems
    assert (problem.rule, problem.line) == ("undefined-read", 6)
    assert "'notse'" in problem.message


def test_template_may_use_state_and_last_message() -> None:
    # `state` is the node's view: `state.input` needs `input` read (`unread-field` otherwise).
    load_text("""\
name: g
entry: a
nodes:
  a:
    kind: llm
    prompt: "{{ state.input }} {{ last_message.content }}"
    output: output
    reads: [messages, input]
""")


def test_a_field_written_by_another_node_can_be_read() -> None:
    load_text("""\
name: g
state:
  notes: {type: "list[str]", reducer: append}
entry: a
nodes:
  a: {kind: function, call: "json:dumps", writes: [notes]}
  b: {kind: model, reads: [notes]}
edges:
  - {from: a, to: b}
""")


def test_llm_output_field_must_be_declared_and_points_at_the_param() -> None:
    problems = problems_in("""\
name: g
entry: a
nodes:
  a:
    kind: llm
    prompt: "{{ input }}"
    output: summary
""")
    assert rules_and_lines(problems) == {("undeclared-write", 7)}


def test_subgraph_fields_point_at_their_mapping() -> None:
    problems = problems_in("""\
name: g
entry: a
nodes:
  a:
    kind: subgraph
    graph: react
    inputs:
      input: question
    outputs:
      answer: output
""")
    assert rules_and_lines(problems) == {("undefined-read", 8), ("undeclared-write", 10)}


def test_missing_subgraph_is_a_kind_check() -> None:
    problems = problems_in("""\
name: g
entry: a
nodes:
  a:
    kind: subgraph
    graph: no-such-builtin-graph
""")
    assert rules_and_lines(problems) == {("kind-check", 5)}
    assert "no-such-builtin-graph" in problems[0].message


def test_bad_params_name_each_param() -> None:
    problems = problems_in("""\
name: g
entry: a
nodes:
  a:
    kind: llm
    promt: "{{ input }}"
    output: 3
""")
    assert rules_and_lines(problems) == {("bad-params", 5), ("bad-params", 6), ("bad-params", 7)}
    messages = " ".join(p.message for p in problems)
    assert "'prompt': Field required" in messages
    assert "'promt': Extra inputs are not permitted; llm nodes take: prompt, output" in messages
    assert "'output'" in messages


@pytest.mark.parametrize(
    ("type_", "reducer", "ok"),
    [
        ("list[int]", "append", True),
        ("list[int] | None", "append", True),
        ("any", "append", True),
        ("str", "append", False),
        ("dict[str, int]", "append", False),
        ("int", "add", True),
        ("float | None", "add", True),
        ("dict[str, int]", "add", True),
        ("str", "add", False),
        ("bool", "add", False),
        ("dict[str, str]", "merge", True),
        ("dict[str, int] | None", "merge", True),
        ("list[str]", "merge", False),
        ("int", "replace", True),
    ],
)
def test_reducer_types(type_: str, reducer: str, ok: bool) -> None:
    text = f"""\
name: g
state:
  f: {{type: "{type_}", reducer: {reducer}}}
entry: a
nodes:
  a: {{kind: model}}
"""
    if ok:
        load_text(text)
    else:
        assert rules_and_lines(problems_in(text)) == {("bad-reducer-type", 3)}


@pytest.mark.parametrize(
    "type_", ["lisst[int]", "os:system", "list[int", "dict[str]", "no_such_module_xyz:Model"]
)
def test_bad_types(type_: str) -> None:
    text = f"""\
name: g
state:
  f:
    type: "{type_}"
entry: a
nodes:
  a: {{kind: model}}
"""
    assert rules_and_lines(problems_in(text)) == {("bad-type", 4)}


def test_state_may_use_a_pydantic_model_type() -> None:
    load_text("""\
name: g
state:
  problem: {type: "loomgraph.graph.spec:Limits"}
entry: a
nodes:
  a: {kind: model}
""")


@pytest.mark.parametrize("name", ["input", "messages", "usage", "output", "state", "last_message"])
def test_reserved_state_names(name: str) -> None:
    text = f"name: g\nstate:\n  {name}: {{type: any}}\nentry: a\nnodes:\n  a: {{kind: model}}\n"
    assert rules_and_lines(problems_in(text)) == {("reserved-name", 3)}


def test_a_kind_whose_check_raises_does_not_hide_other_problems() -> None:
    from loomgraph.graph.registry import _REGISTRY, NodeKind, register_node

    @register_node("test-exploding")
    class Exploding(NodeKind):
        def check(self, graph: object) -> list[str]:
            raise RuntimeError("boom")

    try:
        problems = problems_in("""\
name: g
entry: a
nodes:
  a: {kind: test-exploding, reads: [nothing]}
""")
    finally:
        _REGISTRY.pop("test-exploding", None)
    assert rules_and_lines(problems) == {("kind-check", 4), ("undefined-read", 4)}
    assert any("RuntimeError: boom" in p.message for p in problems)


def test_on_error_must_name_a_node_and_counts_as_a_route() -> None:
    problems = problems_in(
        "name: e\nentry: a\nnodes:\n  a: {kind: model, on_error: fixx}\n"
        "  fix: {kind: model}\nedges:\n  - {from: a, to: END}\n"
        "  - {from: fix, to: END}\n"
    )
    assert ("unknown-endpoint", 4) in rules_and_lines(problems)
    assert "did you mean 'fix'" in " ".join(p.message for p in problems)
    # A handler reached only through on_error is not unreachable.
    load_text(
        "name: e\nentry: a\nnodes:\n  a: {kind: model, on_error: fix}\n"
        "  fix: {kind: model}\nedges:\n  - {from: a, to: END}\n  - {from: fix, to: END}\n"
    )


@pytest.mark.parametrize("text", ["", "\n  \n", "# nothing yet\n"])
def test_an_empty_graph_file_is_said_to_be_empty(text: str) -> None:
    [problem] = problems_in(text)
    assert problem.rule == "not-a-mapping"
    assert problem.message.startswith("the file is empty: a graph is a mapping of `name:`")
