"""Validation gaps found by probing: deep subgraph chains, defaults, reducers on dict values,
written types, failing `bind`s and `visits` in templates."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from loomgraph.authoring.loader import graph_from_data, load_graph_file
from loomgraph.errors import GraphValidationError
from loomgraph.graph.registry import NodeKind, register_node
from loomgraph.graph.spec import Graph
from loomgraph.nodes.function import FunctionNode


def graph(state: dict[str, Any] | None = None, **node: Any) -> dict[str, Any]:
    """A one-node graph `n` with these node keys and state fields."""
    return {
        "schema_version": 1,
        "name": "gap",
        "state": state or {},
        "entry": "n",
        "nodes": {"n": node},
        "edges": [{"from": "n", "to": "END"}],
    }


MAX_GRAPH_DEPTH = 32  # the documented maximum nesting of graphs (docs/validation.md)


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(rule, message) of every problem of the graph `data`; [] when it is valid."""
    try:
        graph_from_data(data)
    except GraphValidationError as err:
        return [(p.rule, p.message) for p in err.problems]
    return []


def write_chain(folder: Path, length: int) -> Path:
    """Graph files g0 … g{length-1}, each running the next as a subgraph; the first file."""
    for i in range(length):
        node = (
            f"{{kind: subgraph, graph: g{i + 1}.yaml}}"
            if i < length - 1
            else "{kind: llm, prompt: 'x', output: output}"
        )
        text = f"schema_version: 1\nname: g{i}\nentry: n\nnodes:\n  n: {node}\n"
        (folder / f"g{i}.yaml").write_text(text + "edges:\n  - {from: n, to: END}\n")
    return folder / "g0.yaml"


# --------------------------------------------------------------------------- 1. nesting


def test_chain_at_the_limit_loads(tmp_path: Path) -> None:
    load_graph_file(write_chain(tmp_path, MAX_GRAPH_DEPTH))


def test_chain_past_the_limit_is_a_problem(tmp_path: Path) -> None:
    with pytest.raises(GraphValidationError) as err:
        load_graph_file(write_chain(tmp_path, MAX_GRAPH_DEPTH + 1))
    assert err.value.rules == {"kind-check"}
    assert f"at most {MAX_GRAPH_DEPTH} levels" in str(err.value)


def test_chain_past_the_limit_with_children_cached(tmp_path: Path) -> None:
    """Loaded bottom-up (every child cached valid), a too deep chain is still refused."""
    first = write_chain(tmp_path, MAX_GRAPH_DEPTH + 1)
    load_graph_file(tmp_path / "g1.yaml")
    with pytest.raises(GraphValidationError, match=f"at most {MAX_GRAPH_DEPTH} levels"):
        load_graph_file(first)


CHAIN_SCRIPT = """
import sys
from loomgraph.authoring.loader import load_graph_file
from loomgraph.errors import GraphValidationError
for path in sys.argv[1:]:
    try:
        load_graph_file(path)
        print("ok")
    except GraphValidationError as err:
        print("refused", sorted(err.rules), "RecursionError" in str(err) or "recursion" in str(err))
"""


def test_long_chain_in_a_fresh_process(tmp_path: Path) -> None:
    """400 chained files, networkx not yet imported: a clear problem, and later loads work."""
    first = write_chain(tmp_path, 400)
    ok = tmp_path / "ok.yaml"
    ok.write_text((tmp_path / "g399.yaml").read_text())
    out = subprocess.run(
        [sys.executable, "-c", CHAIN_SCRIPT, str(first), str(tmp_path / "g300.yaml"), str(ok)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == [
        "refused ['kind-check'] False",
        "refused ['kind-check'] False",
        "ok",
    ]


# --------------------------------------------------------------------------- 2. defaults


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ({"type": "list[str]", "reducer": "add", "default": "notalist"}, True),
        ({"type": "int", "default": "5"}, True),
        ({"type": "list[int]", "default": ["1"]}, True),
        ({"type": "dict[str, int]", "default": {"a": "x"}}, True),
        ({"type": "str", "default": 3}, True),
        ({"type": "int"}, False),  # no default: None, unset
        ({"type": "float", "default": 1}, False),
        ({"type": "int | None", "default": None}, False),
        ({"type": "list[str]", "reducer": "append", "default": []}, False),
        ({"type": "any", "default": "anything"}, False),
        ({"type": "dict[str, float]", "reducer": "add", "default": {"a": 1}}, False),
    ],
)
def test_default_against_type(field: dict[str, Any], bad: bool) -> None:
    found = problems(graph({"f": field}, kind="function", call="builtins:print", writes=["f"]))
    rules = [rule for rule, message in found if "'f'" in message]
    assert rules == (["bad-default"] if bad else [])


# --------------------------------------------------------------------------- 3. add on dicts


@pytest.mark.parametrize(
    ("type_", "bad"),
    [
        ("dict[str, str]", True),
        ("dict[str, bool]", True),
        ("dict[str, list[int]]", True),
        ("dict[str, str] | None", True),
        ("dict[str, int]", False),
        ("dict[str, float]", False),
        ("dict[str, any]", False),
        ("dict", False),
        ("list[str]", False),
    ],
)
def test_add_on_dict_values(type_: str, bad: bool) -> None:
    field = {"type": type_, "reducer": "add"}
    found = problems(graph({"f": field}, kind="function", call="builtins:print", writes=["f"]))
    assert [rule for rule, _ in found] == (["bad-reducer-type"] if bad else [])


# --------------------------------------------------------------------------- 4. written types


@pytest.mark.parametrize(
    ("written", "field", "bad"),
    [
        ("int", "str", True),
        ("str", "list[str]", True),
        ("list[int]", "int", True),
        ("bool", "dict[str, int]", True),
        ("int", "str | None", True),
        ("int", "int", False),
        ("int", "float", False),
        ("str", "int", False),  # "5" may fit an int
        ("float", "int", False),  # 2.0 fits an int
        ("int | str", "str", False),
        ("list[int]", "list[str]", False),  # [] fits
        ("int", "any", False),
        ("dict[str, int]", "dict[str, str]", False),
        ("int", "list[int]", False),  # appended, wrapped in a list (reducer append below)
    ],
)
@pytest.mark.parametrize("kind", ["interrupt", "llm"])
def test_written_type_against_field(written: str, field: str, bad: bool, kind: str) -> None:
    reducer = "append" if field == "list[int]" and written == "int" else "replace"
    params = (
        {"request": written, "message": "how many?"}
        if kind == "interrupt"
        else {"prompt": "how many?", "schema": written}
    )
    found = problems(
        graph({"v": {"type": field, "reducer": reducer}}, kind=kind, output="v", **params)
    )
    assert [rule for rule, _ in found] == (["kind-check"] if bad else [])
    if bad:
        assert "'v'" in found[0][1] and written in found[0][1]


# --------------------------------------------------------------------------- 5. bind


def test_function_without_signature_is_a_problem() -> None:
    found = problems(graph(kind="function", call="builtins:max", writes=["output"]))
    assert [rule for rule, _ in found] == ["kind-check"]
    assert "signature" in found[0][1]


def test_function_bind_is_typed() -> None:
    from loomgraph.errors import GraphError

    data = graph(kind="function", call="builtins:max", writes=["output"])
    spec = Graph.model_validate(data)
    node = FunctionNode("n", spec.nodes["n"], FunctionNode.Params(call="builtins:max"))
    with pytest.raises(GraphError, match="signature"):
        node.bind(spec)


@register_node("test-gaps-crashbind")
class _CrashBind(NodeKind):
    """A kind whose bind fails."""

    def bind(self, graph: Graph) -> None:
        """Fail."""
        raise RuntimeError("bind exploded")


def test_failing_bind_is_a_problem() -> None:
    found = problems(graph(kind="test-gaps-crashbind"))
    assert [rule for rule, _ in found] == ["kind-check"]
    assert "bind exploded" in found[0][1]


def test_agent_on_failing_bind_raises_the_graph_error() -> None:
    from loomgraph import Agent
    from loomgraph.models import ScriptedModel

    spec = Graph.model_validate(graph(kind="test-gaps-crashbind"))
    with pytest.raises(GraphValidationError, match="bind exploded"):
        Agent("s", model=ScriptedModel([]), architecture=spec)


# --------------------------------------------------------------------------- 6. visits


@pytest.mark.parametrize(
    "node",
    [
        {"kind": "llm", "prompt": "visit {{ visits.n }}", "output": "output"},
        {"kind": "llm", "prompt": "x", "system": "{{ visits }}", "output": "output"},
        {"kind": "interrupt", "request": "str", "message": "{{ visits.n }}", "output": "output"},
        {"kind": "subgraph", "graph": "react", "prompt": "{{ visits.n }}"},
    ],
)
def test_visits_in_a_template_is_refused(node: dict[str, Any]) -> None:
    found = problems(graph(**node))
    assert [rule for rule, _ in found] == ["undefined-read"]
    assert "visits" in found[0][1]


def test_visits_in_a_condition_is_fine() -> None:
    data = graph(kind="llm", prompt="{{ input }}", output="output")
    data["edges"] = [{"from": "n", "to": "n", "when": "visits.n < 3"}, {"from": "n", "to": "END"}]
    assert problems(data) == []


def test_probe_files_still_behave(tmp_path: Path) -> None:
    """The probe's `intr.yaml`, as a file: refused, naming the field."""
    path = tmp_path / "intr.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            schema_version: 1
            name: intr
            state:
              n: {type: str}
            entry: ask
            nodes:
              ask: {kind: interrupt, request: int, message: "how many? {{ input }}", output: n}
            edges:
              - {from: ask, to: END}
            """
        )
    )
    with pytest.raises(GraphValidationError) as err:
        load_graph_file(path)
    assert err.value.problems[0].line == 7


NETWORKX_SCRIPT = """
import sys
from loomgraph.authoring.loader import graph_from_data
from loomgraph.graph.registry import NodeKind, register_node

seen = []

@register_node("test-gaps-sees-networkx")
class Sees(NodeKind):
    def check(self, graph):
        seen.append("networkx" in sys.modules)
        return []

assert "networkx" not in sys.modules
graph_from_data({"schema_version": 1, "name": "g", "entry": "n",
    "nodes": {"n": {"kind": "test-gaps-sees-networkx"}}, "edges": [{"from": "n", "to": "END"}]})
print(seen)
"""


def test_networkx_is_imported_before_child_graphs_load() -> None:
    """Node checks (which load child graphs, recursively) run with networkx imported."""
    out = subprocess.run(
        [sys.executable, "-c", NETWORKX_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[True]"


def test_llm_text_into_a_list_field_is_refused() -> None:
    """Without `schema` an llm node writes text: never a list (unless appended to one)."""
    data = graph({"v": {"type": "list[str]"}}, kind="llm", prompt="hi", output="v")
    assert [rule for rule, _ in problems(data)] == ["kind-check"]
    data["state"]["v"]["reducer"] = "append"
    assert problems(data) == []


def test_a_node_name_that_is_not_one_line_of_visible_text_is_a_bad_name() -> None:
    """Node names reach the journal's text columns (and drawings) in every transition; the
    journals check them once here, not at every step."""
    from loomgraph.authoring.loader import graph_from_data
    from loomgraph.errors import GraphValidationError

    for bad in ("a\x00b", "a\nb", "a\u202eb"):
        data = {
            "schema_version": 1,
            "name": "n",
            "entry": bad,
            "nodes": {bad: {"kind": "function", "call": "json:dumps", "writes": []}},
            "edges": [{"from": bad, "to": "END"}],
        }
        with pytest.raises(GraphValidationError, match="bad-name"):
            graph_from_data(data)
