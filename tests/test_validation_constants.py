"""Validation of what an author writes that Jinja reads otherwise than they meant: conditions
whose value depends on nothing (`when: "false"`), templates that need a file loader
(`{% include %}`), a condition wrapped in `{{ }}`; and node kinds whose `check` / `reads` /
`writes` return None or a str (docs/validation.md)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import TemplateSyntaxError

from loomgraph import NodeKind, register_node
from loomgraph.authoring.library import load_graph
from loomgraph.authoring.loader import graph_from_data, graph_from_yaml, load_graph_file
from loomgraph.errors import GraphValidationError
from loomgraph.graph.conditions import (
    compile_condition,
    compile_template,
    constant_condition,
    names_used,
)
from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.spec import Graph


def _refused(text: str) -> GraphValidationError:
    with pytest.raises(GraphValidationError) as caught:
        graph_from_yaml(text, file="g.yaml")
    return caught.value


def _text(err: GraphValidationError) -> str:
    return "\n".join(str(p) for p in err.problems)


# --------------------------------------------------------------------------- constant `when`


def test_a_loop_whose_only_exit_is_a_constant_false_condition_is_refused() -> None:
    """`when: "false"` is an edge no run takes: `think` loops to itself with no way out."""
    err = _refused(
        """
name: stuck
entry: think
nodes:
  think: {kind: llm, prompt: "{{ input }}", output: output}
  done: {kind: llm, prompt: "Polish: {{ output }}", output: output}
edges:
  - {from: think, to: done, when: "false"}
  - {from: think, to: think}
  - {from: done, to: END}
"""
    )
    by_rule = {p.rule: p for p in err.problems}
    assert by_rule["cycle-without-exit"].line == 9, _text(err)
    assert "line 8 (`when: 'false'`)" in by_rule["cycle-without-exit"].message
    assert "never holds" in by_rule["unreachable-node"].message  # `done`: only that edge leads in


def test_a_constant_true_condition_is_unconditional() -> None:
    """`when: "1 < 2"` always holds: the edges after it are shadowed, and a loop through it
    has no exit though it has a `when`."""
    err = _refused(
        """
name: always
entry: a
nodes:
  a: {kind: llm, prompt: "{{ input }}", output: output}
edges:
  - {from: a, to: a, when: "1 < 2"}
  - {from: a, to: END}
"""
    )
    assert [(p.rule, p.line) for p in err.problems] == [
        ("cycle-without-exit", 7),
        ("shadowed-edge", 8),
    ], _text(err)
    assert "`when: '1 < 2'`, which always holds" in err.problems[1].message


def test_only_a_condition_that_depends_on_nothing_is_read_as_constant() -> None:
    """A `when` reading the state or visits, calling a method or failing when evaluated may
    hold: the loop has an exit. One whose value Jinja folds to false has none."""
    may_hold = [
        "done",
        "done or visits.a >= 3",
        "'abc'.startswith('a')",  # a call: left to the run
        "1 / 0 > 1",  # fails when evaluated: left to the run (a ConditionError)
        "done and false",  # `done` is evaluated first: decided at run time
    ]
    never = ["false and done", "not true", "[] | length > 0", "none"]
    for when in [*may_hold, *never]:
        text = f"""
name: runs
state: {{done: {{type: bool, default: false}}}}
entry: a
nodes:
  a: {{kind: llm, prompt: "{{{{ input }}}}", output: output}}
edges:
  - {{from: a, to: END, when: "{when}"}}
  - {{from: a, to: a}}
"""
        if when in may_hold:
            assert graph_from_yaml(text, file="runs.yaml").name == "runs", when
        else:
            assert _refused(text).rules == {"cycle-without-exit"}, when


def test_a_copy_of_a_built_in_graph_with_a_constant_condition_is_checked_in_full() -> None:
    """A copy of `react` takes its routes (same edges, a `when` where it has one) and so
    skips the flow rules; but `when: "false"` on `model -> tools` routes otherwise: `tools`
    is never run, and the flow rules say so."""
    data = load_graph("react").to_data()
    for edge in data["edges"]:
        if edge.get("when"):
            edge["when"] = "false"
    with pytest.raises(GraphValidationError) as caught:
        graph_from_data(data)
    assert caught.value.rules == {"unreachable-node"}, _text(caught.value)
    data = load_graph("react").to_data()
    data["limits"] = {"max_visits": 7}  # still the checked routes: loads
    assert graph_from_data(data).limits.max_visits == 7


_LITERALS = st.sampled_from(
    ["true", "false", "none", "0", "1", "2.5", "''", "'a'", "[]", "[1]", "{}", "{'k': 1}"]
)
_NAMES = st.sampled_from(["x", "visits.a", "x.y"])


def _expressions() -> st.SearchStrategy[str]:
    leaves = st.one_of(_LITERALS, _NAMES)

    def grow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        unary = st.builds(lambda e, op: f"{op} ({e})", inner, st.sampled_from(["not", "-"]))
        binary = st.builds(
            lambda a, op, b: f"({a}) {op} ({b})",
            inner,
            st.sampled_from(["and", "or", "==", "!=", "<", ">", "in", "+", "-", "*", "/", "~"]),
            inner,
        )
        filtered = st.builds(
            lambda e, f: f"({e}) | {f}", inner, st.sampled_from(["length", "string", "list"])
        )
        tested = st.builds(
            lambda e, t: f"({e}) is {t}", inner, st.sampled_from(["none", "number", "string"])
        )
        return st.one_of(unary, binary, filtered, tested)

    return st.recursive(leaves, grow, max_leaves=6)


_VALUES: list[Any] = [None, 0, 1, "", "text", [], [1, 2], {}, {"y": 1}, True, False]


@settings(max_examples=300, deadline=None)
@given(_expressions())
def test_a_constant_verdict_is_what_every_run_gets(expression: str) -> None:
    """Invariant: when validation calls a condition constant, evaluating it gives that truth
    whatever the state holds; and a condition of literals alone (no name, no operator the
    sandbox counts: `+`, `*`) is called constant unless evaluating it fails."""
    verdict = constant_condition(expression)
    condition = compile_condition(expression)
    outcomes: set[object] = set()
    for value in _VALUES:
        try:
            outcomes.add(bool(condition(x=value, visits={"a": 2})))
        except Exception:
            outcomes.add("raises")
    if verdict is not None:
        assert outcomes == {verdict}, (expression, verdict, outcomes)
    elif not names_used(expression, expression=True) and not {"+", "*"} & set(expression):
        assert outcomes == {"raises"}, (expression, outcomes)


# --------------------------------------------------------------------------- templates


async def test_a_template_that_includes_a_file_is_refused_at_load(tmp_path: Path) -> None:
    """`{% include %}` would fail every visit with `TypeError: no loader`: refused at load."""
    (tmp_path / "header.md").write_text("You are terse.\n")
    path = tmp_path / "inc.yaml"
    path.write_text(
        "name: inc\nentry: answer\nnodes:\n"
        "  answer:\n    kind: llm\n    output: output\n"
        "    prompt: '{% include \"header.md\" %}{{ input }}'\n"
        "edges:\n  - {from: answer, to: END}\n"
    )
    with pytest.raises(GraphValidationError) as caught:
        load_graph_file(path)
    [problem] = caught.value.problems
    assert (problem.rule, problem.line) == ("bad-template", 7)
    assert "uses {% include %}" in problem.message and "inline the text" in problem.message


@pytest.mark.parametrize(
    ("tag", "source"),
    [
        ("include", "Hi {{ input }}\n{% include 'header.md' %}"),
        ("extends", "{% extends 'base.md' %}"),
        ("import", "{% import 'macros.md' as m %}{{ input }}"),
        ("from", "{% if input %}{% from 'macros.md' import greet %}{% endif %}"),
    ],
)
def test_every_tag_that_reads_another_template_is_refused(tag: str, source: str) -> None:
    """The four tags that need a loader, anywhere in the template: `bad-template` at load
    (with the line inside the template), and a TemplateSyntaxError when compiled unvalidated."""
    data = {
        "name": "tags",
        "entry": "a",
        "nodes": {"a": {"kind": "llm", "prompt": source, "output": "output"}},
        "edges": [{"from": "a", "to": "END"}],
    }
    with pytest.raises(GraphValidationError) as caught:
        graph_from_data(data)
    [problem] = [p for p in caught.value.problems if p.rule == "bad-template"]
    assert f"uses {{% {tag} %}}" in problem.message
    assert ("at line 2" in problem.message) is ("\n" in source)
    with pytest.raises(TemplateSyntaxError, match=f"{{% {tag} %}} reads another template"):
        compile_template(source)


# --------------------------------------------------------------------------- conditions


@pytest.mark.parametrize(
    ("when", "bare"),
    [
        ("{{ done }}", " (`done`)"),
        ("{{done}}", " (`done`)"),
        (" {{- done and visits.a < 3 -}} ", " (`done and visits.a < 3`)"),
        ("{{ done }} and {{ visits.a < 3 }}", " (`done and visits.a < 3`)"),
        ("{% if done %}", ""),
    ],
)
def test_a_condition_wrapped_in_braces_gets_told_to_drop_them(when: str, bare: str) -> None:
    """Jinja reads `{{` as a dict literal ("expected token ':'"); the problem says to write
    the expression without `{{ }}`, and shows it so when it can."""
    data = {
        "name": "wrapped",
        "state": {"done": {"type": "bool", "default": False}},
        "entry": "a",
        "nodes": {"a": {"kind": "llm", "prompt": "{{ input }}", "output": "output"}},
        "edges": [{"from": "a", "to": "END", "when": when}, {"from": "a", "to": "a"}],
    }
    with pytest.raises(GraphValidationError) as caught:
        graph_from_data(data)
    [problem] = caught.value.problems
    assert problem.rule == "bad-condition"
    assert "write it without `{{ }}` or `{% %}`" + bare in problem.message


# --------------------------------------------------------------------------- kinds' methods


class _Returns:
    """What the kinds below return from `check`, `reads` and `writes` (set by each test)."""

    check: Any = None
    reads: Any = ()
    writes: Any = ("output",)


@register_node("validation_constants_returns")
class _ReturnsNode(NodeKind):
    """A kind whose `check`, `reads` and `writes` return what `_Returns` holds."""

    def check(self, graph: Graph) -> list[str]:
        """What the test set."""
        returned: list[str] = _Returns.check
        return returned

    def reads(self) -> list[str]:
        """What the test set."""
        returned: list[str] = _Returns.reads
        return returned

    def writes(self) -> list[str]:
        """What the test set."""
        returned: list[str] = _Returns.writes
        return returned

    async def run(self, state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
        """Answers a constant."""
        return {"output": "ok"}


@pytest.fixture
def returns() -> Any:
    """`_Returns`, reset after the test."""
    yield _Returns
    _Returns.check, _Returns.reads, _Returns.writes = None, (), ("output",)


_USES_IT = {
    "name": "uses-it",
    "entry": "a",
    "nodes": {"a": {"kind": "validation_constants_returns"}},
    "edges": [{"from": "a", "to": "END"}],
}


def _kind_checks(**returned: Any) -> list[str]:
    for method, value in returned.items():
        setattr(_Returns, method, value)
    try:
        graph_from_data(_USES_IT)
    except GraphValidationError as err:
        assert err.rules == {"kind-check"}, _text(err)
        return [p.message for p in err.problems]
    return []


def test_a_kind_whose_check_returns_none_does_not_crash_loading(returns: Any) -> None:
    """A `check` that falls off its end (None) has found nothing: the graph loads."""
    assert _kind_checks(check=None) == []


def test_a_check_returning_one_string_is_one_problem(returns: Any) -> None:
    """A str is one message, not one problem per character."""
    assert _kind_checks(check="describe the graph") == ["node 'a': describe the graph"]


def test_a_check_returning_anything_else_names_the_kind_and_method(returns: Any) -> None:
    """Not None, a str or a list of messages: a `kind-check` problem saying what came back."""
    assert _kind_checks(check=3) == [
        "node 'a': the 'validation_constants_returns' kind's check() returned 3 (int), not a "
        "list of messages; return a list of str (empty when all is well)"
    ]


@pytest.mark.parametrize(
    ("method", "value", "shown", "fix"),
    [
        ("reads", None, "None", "return [] when there are none"),
        ("writes", None, "None", "return [] when there are none"),
        ("reads", "messages", "'messages'", "return ['messages']"),
        ("writes", ["output", 1], "['output', 1] (list)", "return a list of str"),
    ],
)
def test_reads_or_writes_returning_no_list_of_names_is_a_kind_check(
    returns: Any, method: str, value: Any, shown: str, fix: str
) -> None:
    """The run takes `reads()` / `writes()` as they are (`tuple(node.reads())`): None would
    fail every visit, a str would be one field per character. A `kind-check` problem naming
    the kind and method, and no crash of the load."""
    assert _kind_checks(**{method: value}) == [
        f"node 'a': the 'validation_constants_returns' kind's {method}() returned {shown}, "
        f"not a list of field names, so every visit would fail; {fix}"
    ]


def test_reads_that_raises_is_a_kind_check(returns: Any) -> None:
    """An exception from `reads()` (or from iterating what it returned) is reported as one
    from `check` is: it crashes no load and hides no other problem."""

    class Broken:
        def __iter__(self) -> Any:
            raise RuntimeError("broken reads")

    assert _kind_checks(reads=Broken()) == [
        "node 'a': the 'validation_constants_returns' kind's reads() failed: "
        "RuntimeError: broken reads"
    ]
