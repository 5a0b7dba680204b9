"""Diagrams of graphs: DOT, SVG through the real `dot`, Mermaid, run overlays, files."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from loomgraph.authoring.library import load_graph
from loomgraph.authoring.render import RenderError, RunOverlay, render, to_dot, to_mermaid, to_svg
from loomgraph.graph.spec import END, EdgeSpec, Graph, NodeSpec
from loomgraph.protocols import Transition, Usage

REACT = Path(__file__).resolve().parent.parent / "graphs" / "react.yaml"
CONDITION = "last_message.tool_calls | length > 0"
SVG_NS = "{http://www.w3.org/2000/svg}"

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` not installed")


@pytest.fixture
def react() -> Graph:
    return load_graph(REACT)


def python_graph(plan_to_act: str = 'messages[-1].content == "go" and state["n"] > 1') -> Graph:
    """A graph built in Python, with a condition full of characters diagrams choke on."""
    return Graph(
        name="py-built",
        description='A "quoted" <plan> & act loop',
        entry="plan",
        nodes={
            "plan": NodeSpec(kind="model", description='Plans; says "go" when ready'),
            "act": NodeSpec(kind="tools", reads=["messages", "plan_notes"]),
        },
        edges=[
            EdgeSpec(source="plan", target="act", when=plan_to_act),
            EdgeSpec(source="plan", target=END),
            EdgeSpec(source="act", target="plan"),
        ],
    )


def step(node: str, next_node: str, seq: int = 0) -> Transition:
    return Transition("run-1", seq, node, 1, {}, next_node, Usage(), 0.0)


def svg_root(svg: str) -> ET.Element:
    root = ET.fromstring(svg.encode())
    assert root.tag == f"{SVG_NS}svg"
    return root


NODE_ID = re.compile(r"^\t+(n\d+) \[label=(?:<.*?<B>(.*?)</B>|([^ ]+))", re.M)
STATEMENT_IDS = re.compile(r"^(\t+)(n\d+|start)(?::\w+)?(?: -> (n\d+))?", re.M)


def readable(dot: str) -> str:
    """The DOT text with each synthetic node id (`n3`) replaced by the node's name, as its
    label shows it, so assertions can say `model -> tools`."""
    names = {m[1]: m[2] if m[2] is not None else m[3].strip('"') for m in NODE_ID.finditer(dot)}
    names["start"] = "start"

    def swap(m: re.Match[str]) -> str:
        head = f"{m[1]}{names[m[2]]}"
        return f"{head} -> {names[m[3]]}" if m[3] else head

    return STATEMENT_IDS.sub(swap, dot)


def svg_text(root: ET.Element) -> str:
    return " ".join(" ".join(t.itertext()) for t in root.iter(f"{SVG_NS}text"))


# --------------------------------------------------------------------------- DOT


def test_dot_shows_nodes_kinds_io_conditions_entry_and_end(react: Graph) -> None:
    dot = readable(to_dot(react))
    assert dot.startswith("digraph loomgraph {")
    for name in ("model", "tools"):
        assert f"<B>{name}</B>" in dot
        assert f"<I>{name}</I>" in dot  # the kind
    assert "reads: messages" in dot
    assert "writes: messages, usage" in dot
    assert "writes: messages</FONT>" in dot
    # The conditional edge: its condition, its order, dashed; the default edge says `else`.
    assert re.search(
        r'model -> tools \[label="\[1\] ' + re.escape(CONDITION) + '".*style=dashed', dot
    )
    assert re.search(r'model -> END \[label="\[2\] else"', dot)
    # A node with one outgoing edge gets no order number and no label.
    assert re.search(r'tools -> model \[label=""', dot)
    # Entry marker: a small filled circle pointing at the entry; END a double circle.
    assert re.search(r"\tstart \[label=\"\".*shape=circle.*style=filled", dot)
    assert "start -> model" in dot
    assert re.search(r"END \[label=END.*shape=doublecircle", dot)
    assert 'tooltip="One model turn over the conversation' in dot


def test_dot_of_a_python_graph_shows_kind_defaults() -> None:
    dot = readable(to_dot(python_graph()))
    # `plan` declares no reads/writes: the `model` kind's defaults show.
    assert "reads: messages</FONT>" in dot
    assert "writes: messages, usage" in dot
    assert "reads: messages, plan_notes" in dot
    assert "start -> plan" in dot


def test_dot_accepts_a_builtin_name_and_a_path(react: Graph) -> None:
    assert to_dot("react") == to_dot(react) == to_dot(REACT)


def test_broken_graph_still_draws() -> None:
    graph = Graph(
        name="broken",
        entry="x",
        nodes={"x": NodeSpec(kind="no-such-kind", writes=["out"])},
        edges=[EdgeSpec(source="x", target="ghost")],
    )
    dot = readable(to_dot(graph))
    assert "<I>no-such-kind</I>" in dot and "writes: out" in dot and "x -> ghost" in dot
    assert "u_ghost" in to_mermaid(graph)


# --------------------------------------------------------------------------- SVG


@needs_dot
def test_svg_through_real_dot(react: Graph) -> None:
    svg = to_svg(react)
    text = svg_text(svg_root(svg))
    for needle in (
        "model",
        "tools",
        "END",
        "reads: messages",
        "writes: messages, usage",
        CONDITION,
        "else",
    ):
        assert needle in text


@needs_dot
def test_svg_of_awkward_text_is_valid() -> None:
    # Quotes, backslashes, `<...>` and `&` must reach `dot` escaped, or it fails to parse.
    graph = python_graph(r'plan.text == "a\\b" and "<x>" in plan.text & 1')
    root = svg_root(to_svg(graph))
    assert r'plan.text == "a\\b" and "<x>" in plan.text & 1' in svg_text(root)
    titles = " ".join(a.get("{http://www.w3.org/1999/xlink}title", "") for a in root.iter())
    assert 'Plans; says "go" when ready' in titles


def test_missing_dot_binary_is_a_clear_error(
    react: Graph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(RenderError) as info:
        to_svg(react)
    message = str(info.value)
    assert "dot" in message and "apt-get install graphviz" in message
    assert "brew install graphviz" in message and "Mermaid" in message
    with pytest.raises(RenderError):
        render(react, tmp_path / "react.svg")
    # The text formats need no binary.
    assert "digraph" in to_dot(react)
    assert render(react, tmp_path / "react.mmd").read_text().startswith("flowchart TD")


# --------------------------------------------------------------------------- Mermaid

EDGE_LINE = re.compile(r"^    (\w+) (-->|-\.->)(\|([^|\"\[\]{}()<>]*)\|)? (\w+)$")
NODE_LINE = re.compile(r'^    (\w+)(\["[^"]*"\]|\(\("[^"]*"\)\)|\(\(\("[^"]*"\)\)\))$')


def parse_mermaid(text: str) -> tuple[dict[str, str], list[tuple[str, str, str, str | None]]]:
    """The node declarations and edges of our Mermaid output, checked line by line."""
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str, str, str | None]] = []
    for line in lines[1:]:
        if m := NODE_LINE.match(line):
            nodes[m[1]] = m[2]
        elif m := EDGE_LINE.match(line):
            edges.append((m[1], m[2], m[5], m[4]))
        else:
            assert re.match(r"^    (%%|linkStyle |classDef |class )", line), line
    return nodes, edges


def test_mermaid_structure(react: Graph) -> None:
    text = to_mermaid(react)
    nodes, edges = parse_mermaid(text)
    assert set(nodes) == {"__start__", "__end__", "n_model", "n_tools"}
    assert nodes["__end__"] == '((("END")))'  # double circle
    assert (
        "<b>model</b><br/><i>model</i><br/>reads: messages<br/>writes: messages, usage"
        in (nodes["n_model"])
    )
    assert edges == [
        ("__start__", "-->", "n_model", None),
        ("n_model", "-.->", "n_tools", "#91;1#93; last_message.tool_calls #124; length #gt; 0"),
        ("n_model", "-->", "__end__", "#91;2#93; else"),
        ("n_tools", "-->", "n_model", None),
    ]


def test_mermaid_escapes_what_breaks_it() -> None:
    text = to_mermaid(python_graph())
    nodes, edges = parse_mermaid(text)  # no raw quote, pipe, bracket or angle in any label
    (label,) = [lbl for src, _, dst, lbl in edges if (src, dst) == ("n_plan", "n_act")]
    assert label == (
        "#91;1#93; messages#91;-1#93;.content == #quot;go#quot; "
        "and state#91;#quot;n#quot;#93; #gt; 1"
    )
    assert "reads: messages, plan_notes" in nodes["n_act"]
    # The description (quotes, <, &) goes into a comment line, on one line.
    assert '%% py-built v1: A "quoted" <plan> & act loop' in text


def test_mermaid_ids_avoid_end_keyword_and_clashes() -> None:
    graph = Graph(
        name="ids",
        entry="end",
        nodes={
            "end": NodeSpec(kind="tools"),
            "a-b": NodeSpec(kind="tools"),
            "a_b": NodeSpec(kind="tools"),
        },
        edges=[
            EdgeSpec(source="end", target="a-b"),
            EdgeSpec(source="a-b", target="a_b"),
            EdgeSpec(source="a_b", target=END),
        ],
    )
    nodes, edges = parse_mermaid(to_mermaid(graph))
    assert {"n_end", "n_a_b", "n_a_b_2"} <= set(nodes)
    assert ("n_a_b", "-->", "n_a_b_2", None) in edges


# --------------------------------------------------------------------------- run overlays


def test_overlay_from_transitions() -> None:
    steps = [
        step("model", "tools", 1),
        step("tools", "model", 2),
        step("model", "tools", 3),
        step("tools/inner", END, 4),
    ]  # a subgraph's step is not an edge of this graph
    run = RunOverlay.from_transitions(steps, status="failed")
    assert run.visits == {"model": 2, "tools": 1}
    assert run.path == [("model", "tools"), ("tools", "model"), ("model", "tools")]
    assert run.stopped_at == "tools"  # the node the run went on to, and failed in
    assert RunOverlay.from_transitions([], status="failed", stopped_at="model").stopped_at == (
        "model"
    )


def test_dot_overlay_marks_visits_taken_edges_and_failure(react: Graph) -> None:
    steps = [step("model", "tools"), step("tools", "model"), step("model", "tools")]
    dot = readable(to_dot(react, run=RunOverlay.from_transitions(steps, status="failed")))
    assert "visits: 2" in dot and "visits: 1" in dot
    assert re.search(r'model -> tools \[label="\[1\] .* \u00d72".*penwidth=2.5', dot)
    assert re.search(r'tools -> model \[label="\u00d71".*penwidth=2.5', dot)
    assert re.search(r"model -> END \[label=\"\[2\] else\" tooltip", dot)  # not taken: plain
    assert re.search(r"\ttools \[label=.*color=\"#dc2626\".*penwidth=3", dot)  # failed: red


def test_overlay_limit_is_orange_and_completed_marks_end(react: Graph) -> None:
    limit = {"visits": {"model": 25, "tools": 25}, "stopped_at": "model", "status": "limit_reached"}
    assert re.search(r'\tmodel \[label=.*color="#ea580c"', readable(to_dot(react, run=limit)))
    done = RunOverlay.from_transitions([step("model", END)])
    assert done.stopped_at == END
    assert re.search(r'\tEND \[.*color="#16a34a"', readable(to_dot(react, run=done)))


def test_mermaid_overlay(react: Graph) -> None:
    steps = [step("model", "tools"), step("tools", "model")]
    text = to_mermaid(react, run=RunOverlay.from_transitions(steps, status="interrupted"))
    nodes, edges = parse_mermaid(text)
    assert "visits: 1" in nodes["n_model"] and "visits: 1" in nodes["n_tools"]
    # Links count from 0 in file order: 0 start, 1 model->tools, 2 model->END, 3 tools->model.
    assert "    linkStyle 0 stroke:#1d4ed8,stroke-width:3px" in text
    assert "    linkStyle 1 stroke:#1d4ed8,stroke-width:3px" in text
    assert "linkStyle 2 " not in text
    assert "    linkStyle 3 stroke:#1d4ed8,stroke-width:3px" in text
    assert ("n_tools", "-->", "n_model", "\u00d71") in edges
    assert "    class n_tools visited" in text
    assert "    classDef stopped fill:#ffedd5,stroke:#ea580c,stroke-width:4px" in text
    assert "    class n_model stopped" in text


def test_overlay_mapping_with_only_a_path_and_bad_keys(react: Graph) -> None:
    dot = to_dot(react, run={"path": [("model", "tools")], "status": "running"})
    assert "visits: 1" in dot
    with pytest.raises(RenderError, match="unknown run overlay keys: visted"):
        to_dot(react, run={"visted": {}})


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize(
    "suffix", [".dot", ".gv", ".mmd", ".mermaid", ".MMD", pytest.param(".svg", marks=needs_dot)]
)
def test_render_writes_by_suffix(react: Graph, tmp_path: Path, suffix: str) -> None:
    out = render(
        react, tmp_path / f"react{suffix}", run=RunOverlay(path=[("model", END)], stopped_at=END)
    )
    assert out == tmp_path / f"react{suffix}"
    text = out.read_text(encoding="utf-8")
    kind = suffix.lower()
    if kind == ".svg":
        assert "model" in svg_text(svg_root(text))
    elif kind in (".dot", ".gv"):
        assert text.startswith("digraph loomgraph {") and "visits: 1" in text
    else:
        assert text.startswith("flowchart TD") and "visits: 1" in text


def test_render_unknown_suffix_lists_supported(react: Graph, tmp_path: Path) -> None:
    with pytest.raises(RenderError) as info:
        render(react, tmp_path / "react.jpg")
    for suffix in (".svg", ".png", ".pdf", ".dot", ".gv", ".mmd", ".mermaid"):
        assert suffix in str(info.value)
    assert not (tmp_path / "react.jpg").exists()
