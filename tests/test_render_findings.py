"""Findings on diagrams: user text never becomes DOT syntax (ids, attributes, a second
graph), deep and dense graphs draw in linear time, `dot` has a timeout and its layouts are
cached, `render --run` draws the graph the journal kept, and Mermaid honours `expand`."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import stat
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from loomgraph.authoring.diagram import back_edges, edges_of
from loomgraph.authoring.library import load_graph
from loomgraph.authoring.render import RenderError, render, to_dot, to_mermaid, to_svg
from loomgraph.cli.main import main
from loomgraph.graph.spec import END, EdgeSpec, Graph, NodeSpec

SVG = "{http://www.w3.org/2000/svg}"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` not installed")

XSS = 'p:q:n [URL="javascript:alert(document.domain)" target="_top" label="click me"]'
XSS2 = '<a> [URL="javascript&#58;alert(document.domain)" label="pwned"] <b>'
GNAME = '<x> { graph [URL="javascript&#58;alert(1)" target="_top"] } digraph <y>'
AWKWARD = ["a:b", 'x"y', "<b>", "a\\b", "n:ne", "a\\", "node", "\\N", "&#58;", 'x" -> y']


def two_nodes(name: str, graph_name: str = "g") -> Graph:
    """model -> `name` (conditional), model -> END, `name` -> model: the tester's shape."""
    return Graph(
        name=graph_name,
        entry="model",
        nodes={"model": NodeSpec(kind="model"), name: NodeSpec(kind="tools")},
        edges=[
            EdgeSpec(source="model", target=name, when="last_message.tool_calls | length > 0"),
            EdgeSpec(source="model", target=END),
            EdgeSpec(source=name, target="model"),
        ],
    )


def drawn(svg: str) -> tuple[list[str], set[tuple[str, str]]]:
    """The node names an SVG draws (each node's first text) and its edges, by those names."""
    assert svg.count("<svg") == 1, "exactly one <svg> root"
    root = ET.fromstring(svg.encode())
    assert root.tag == f"{SVG}svg"
    for element in root.iter():
        for attr, value in element.attrib.items():
            local = attr.rsplit("}", 1)[-1].lower()
            assert local not in ("href", "url", "target"), (attr, value)
            if local != "title":  # a tooltip is text: the name may say anything
                assert "javascript" not in value.lower(), (attr, value)
    names: dict[str, str] = {}
    edges: set[tuple[str, str]] = set()
    for group in root.iter(f"{SVG}g"):
        title = group.find(f"{SVG}title")
        if group.get("class") == "node" and title is not None:
            texts = ["".join(t.itertext()) for t in group.iter(f"{SVG}text")]
            names[title.text or ""] = texts[0] if texts else "(start)"
    for group in root.iter(f"{SVG}g"):
        title = group.find(f"{SVG}title")
        if group.get("class") == "edge" and title is not None:
            tail, head = (end.split(":")[0] for end in (title.text or "").split("->"))
            assert tail in names and head in names, f"edge to an undeclared node: {title.text}"
            edges.add((names[tail], names[head]))
    return sorted(names.values()), edges


# --------------------------------------------------------------------------- 1: injection


@needs_dot
@pytest.mark.parametrize("name", [XSS, XSS2, *AWKWARD])
def test_node_names_draw_as_text_never_as_dot(name: str) -> None:
    nodes, edges = drawn(to_svg(two_nodes(name)))
    assert nodes == sorted(["(start)", "END", "model", name])
    assert edges == {("(start)", "model"), ("model", name), ("model", "END"), (name, "model")}


@needs_dot
def test_a_graph_name_is_text_never_dot() -> None:
    svg = to_svg(two_nodes("tools", graph_name=GNAME))
    nodes, _ = drawn(svg)
    assert nodes == ["(start)", "END", "model", "tools"]
    root = ET.fromstring(svg.encode())
    assert GNAME + " v1" in " ".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))


@needs_dot
def test_the_testers_files_draw(tmp_path: Path) -> None:
    names = textwrap.dedent(
        """\
        schema_version: 1
        name: names
        entry: "a.b"
        nodes:
          "a.b": {kind: model}
          "node": {kind: tools}
          "x\\" -> y": {kind: model}
          "<script>alert(1)<script>": {kind: tools}
          "a.c": {kind: tools}
        edges:
          - {from: "a.b", to: node, when: "last_message.tool_calls | length > 0"}
          - {from: "a.b", to: "x\\" -> y", when: "input == 'q'"}
          - {from: "a.b", to: "a.c", when: "input == 'r'"}
          - {from: "a.b", to: END}
          - {from: node, to: "a.b"}
          - {from: "x\\" -> y", to: "<script>alert(1)<script>"}
          - {from: "<script>alert(1)<script>", to: END}
          - {from: "a.c", to: "a.b"}
        """
    )
    path = tmp_path / "names.yaml"
    path.write_text(names, encoding="utf-8")
    out = render(path, tmp_path / "names.svg")
    nodes, edges = drawn(out.read_text(encoding="utf-8"))
    script, quote = "<script>alert(1)<script>", 'x" -> y'
    assert nodes == sorted(["(start)", "END", "a.b", "node", quote, script, "a.c"])
    assert len(edges) == 9 and (quote, script) in edges and ("a.c", "a.b") in edges


STATEMENT = re.compile(r"^\t+(\S+)(?: -> (\S+))? \[")
SYNTHETIC = re.compile(r"^(n\d+|start|legend|graph|node|edge)$")


def dot_ids(dot: str) -> set[str]:
    """The ids of the node, edge and attribute statements of a DOT text."""
    ids: set[str] = set()
    for line in dot.splitlines():
        if m := STATEMENT.match(line):
            ids.update(i for i in m.groups() if i)
    return ids


def test_dot_ids_are_synthetic() -> None:
    dot = to_dot(two_nodes(XSS, graph_name=GNAME))
    assert dot.startswith("digraph loomgraph {")
    bare = re.sub(r"<<TABLE.*?</TABLE>>", "<>", re.sub(r'"(?:[^"\\]|\\.)*"', '""', dot))
    assert "URL" not in bare and "target" not in bare and "javascript" not in bare
    ids = dot_ids(dot)
    assert ids and all(SYNTHETIC.match(i) for i in ids), ids


def test_expanded_clusters_have_synthetic_ids(tmp_path: Path) -> None:
    # (Node names with `:` or `/` are refused when a file is loaded: `bad-name`.)
    child = tmp_path / "child.yaml"
    child.write_text(
        "name: child\nentry: 'a.b'\nnodes:\n  'a.b': {kind: model}\n"
        "edges:\n  - {from: 'a.b', to: END}\n",
        encoding="utf-8",
    )
    outer = tmp_path / "outer.yaml"
    outer.write_text(
        f"name: outer\nentry: '{XSS2}'\nnodes:\n  '{XSS2}': {{kind: subgraph, graph: child.yaml}}\n"
        f"edges:\n  - {{from: '{XSS2}', to: END}}\n",
        encoding="utf-8",
    )
    dot = to_dot(outer, expand=True)
    assert "subgraph cluster_0 {" in dot and "lhead=cluster_0" in dot
    assert all(SYNTHETIC.match(i) for i in dot_ids(dot)), dot_ids(dot)
    if shutil.which("dot"):
        nodes, edges = drawn(to_svg(outer, expand=True))
        assert nodes == sorted(["(start)", "END", "END", XSS2, "a.b"])
        assert (XSS2, "a.b") in edges and ("a.b", "END") in edges


def test_a_missing_node_draws_as_its_name() -> None:
    graph = Graph(
        name="broken",
        entry="ghost:ne",
        nodes={"x": NodeSpec(kind="tools")},
        edges=[EdgeSpec(source="x", target="a:b")],
    )
    dot = to_dot(graph)
    assert 'label="ghost:ne"' in dot and 'label="a:b"' in dot
    # Mermaid too: each missing name its own dashed box, labelled with the name (before, a
    # box showed its made-up id, and `a:b` and `a_b` would have shared one).
    twins = graph.model_copy(update={"edges": [*graph.edges, EdgeSpec(source="x", target="a_b")]})
    mermaid = to_mermaid(twins)
    assert 'u_ghost_ne["ghost:ne"]:::missing' in mermaid
    assert 'u_a_b["a:b"]:::missing' in mermaid and 'u_a_b_2["a_b"]:::missing' in mermaid
    assert "classDef missing stroke-dasharray:5 5" in mermaid
    if shutil.which("dot"):
        nodes, edges = drawn(to_svg(graph))
        assert nodes == sorted(["(start)", "END", "x", "ghost:ne", "a:b"])
        assert edges == {("(start)", "ghost:ne"), ("x", "a:b")}


# --------------------------------------------------------------------------- 2, 3: size


def chain(n: int, back: bool = True) -> Graph:
    nodes = {f"n{i}": NodeSpec(kind="tools") for i in range(n)}
    edges = [EdgeSpec(source=f"n{i}", target=f"n{i + 1}") for i in range(n - 1)]
    edges.append(EdgeSpec(source=f"n{n - 1}", target="n0" if back else END))
    return Graph(name="chain", entry="n0", nodes=nodes, edges=edges)


def test_a_long_chain_draws_without_recursion() -> None:
    graph = chain(3000)
    assert back_edges(graph) == {2999}  # the one return edge
    assert "n2999" in to_dot(graph) and "n_n2999" in to_mermaid(graph)


def test_back_edges_in_file_order() -> None:
    graph = Graph(
        name="loops",
        entry="a",
        nodes={k: NodeSpec(kind="tools") for k in "abcd"},
        edges=[
            EdgeSpec(source="a", target="b"),
            EdgeSpec(source="b", target="c"),
            EdgeSpec(source="c", target="a"),  # 2: back
            EdgeSpec(source="b", target="a"),  # 3: back
            EdgeSpec(source="c", target="b"),  # 4: back
            EdgeSpec(source="d", target="d"),  # 5: a node no path reaches, its self-loop
            EdgeSpec(source="a", target=END),
        ],
    )
    assert back_edges(graph) == {2, 3, 4, 5}


def test_many_parallel_edges_are_linear() -> None:
    edges = [EdgeSpec(source="a", target="b", when="input") for _ in range(20000)]
    graph = Graph(
        name="many",
        entry="a",
        nodes={"a": NodeSpec(kind="tools"), "b": NodeSpec(kind="tools")},
        edges=[*edges, EdgeSpec(source="a", target="b"), EdgeSpec(source="b", target=END)],
    )
    began = time.perf_counter()
    drawn_edges = edges_of(graph)
    back_edges(graph)
    assert time.perf_counter() - began < 3
    assert [e.order for e in drawn_edges[:2]] == [1, 2] and drawn_edges[-2].order == 20001
    assert drawn_edges[-2].is_else and not drawn_edges[0].is_else
    assert drawn_edges[-1].order is None and not drawn_edges[-1].is_else


def fake_dot(tmp_path: Path, body: str) -> None:
    """A `dot` on PATH that runs `body` (a shell script)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "dot"
    script.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def test_dot_that_takes_too_long_is_a_render_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", os.environ["PATH"])  # restored after the test
    fake_dot(tmp_path, "exec tail -f /dev/null")  # never answers
    began = time.perf_counter()
    with pytest.raises(RenderError, match=r"more than 0\.3 s"):
        to_svg(chain(5, back=False), timeout=0.3)
    assert time.perf_counter() - began < 10


@needs_dot
def test_the_same_layout_runs_dot_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.which("dot")
    calls = tmp_path / "calls"
    monkeypatch.setenv("PATH", os.environ["PATH"])
    fake_dot(tmp_path, f'echo x >> "{calls}"\nexec "{real}" "$@"')
    graph = chain(4, back=False)
    graph.description = f"cache probe {tmp_path}"  # a layout no other test asked for
    first = to_svg(graph, run={"path": [("n0", "n1")]})
    assert to_svg(graph, run={"path": [("n0", "n1")]}) == first
    assert calls.read_text().count("x") == 1
    assert to_svg(graph, run={"path": [("n0", "n1"), ("n1", "n2")]}) != first  # a new position
    assert calls.read_text().count("x") == 2


# --------------------------------------------------------------------------- 4: render --run

GRAPH_FILE = """\
name: mine
entry: thinker
nodes:
  thinker: {kind: model}
edges:
  - {from: thinker, to: END}
"""


def journaled_run(tmp_path: Path) -> tuple[str, Path]:
    """A completed run of a graph file (not a built-in) in a SQLite journal."""
    from loomgraph import Agent
    from loomgraph.runtime.sqlite import SqliteRuntime

    path = tmp_path / "mine.yaml"
    path.write_text(GRAPH_FILE, encoding="utf-8")
    db = tmp_path / "j.db"

    async def go() -> str:
        runtime = SqliteRuntime(str(db))
        try:
            result = await Agent("x", model="echo", runtime=runtime, architecture=path).run("hi")
            assert result.status == "completed"
            return str(result.run_id)
        finally:
            await runtime.close()

    return asyncio.run(go()), db


def test_render_run_without_graph_draws_the_pinned_graph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id, db = journaled_run(tmp_path)
    (tmp_path / "mine.yaml").unlink()  # the file is gone: the journal still has the graph
    out = tmp_path / "r.dot"
    assert main(["render", "--run", run_id, "--runtime", f"sqlite:{db}", "-o", str(out)]) == 0
    dot = out.read_text(encoding="utf-8")
    assert "<B>thinker</B>" in dot and "visits: 1" in dot


def test_render_run_with_a_changed_graph_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id, db = journaled_run(tmp_path)
    changed = tmp_path / "mine.yaml"
    changed.write_text(GRAPH_FILE.replace("{kind: model}", "{kind: model, description: new}"))
    out = tmp_path / "r.dot"
    argv = ["render", str(changed), "--run", run_id, "--runtime", f"sqlite:{db}", "-o", str(out)]
    assert main(argv) == 0
    assert "new" in out.read_text(encoding="utf-8")  # the graph asked for is drawn
    err = capsys.readouterr().err
    assert "not the version" in err and run_id in err
    capsys.readouterr()
    (tmp_path / "mine.yaml").write_text(GRAPH_FILE, encoding="utf-8")  # the same version
    assert main(argv) == 0
    assert "not the version" not in capsys.readouterr().err


# --------------------------------------------------------------------------- 5: Mermaid expand


def test_mermaid_expand_draws_the_child_graphs(tmp_path: Path) -> None:
    flat, expanded = to_mermaid("plan-execute"), to_mermaid("plan-execute", expand=True)
    assert "subgraph" not in flat
    assert expanded.count("    subgraph ") == 2 and expanded.count("    end") >= 2
    assert "execute_parallel: react v1" in expanded
    lines = expanded.splitlines()
    child_nodes = [line for line in lines if "<b>model</b>" in line]
    assert len(child_nodes) == 2  # react's model, once per node that runs it
    out = render("plan-execute", tmp_path / "pe.mmd", expand=True)
    assert out.read_text(encoding="utf-8") == expanded


def test_mermaid_expand_keeps_overlay_link_numbers() -> None:
    graph = load_graph("plan-execute")
    pairs = [(e.source, e.target) for e in graph.edges]
    text = to_mermaid(graph, run={"path": pairs[:1]}, expand=True)
    flat = to_mermaid(graph, run={"path": pairs[:1]})
    styles = [line for line in flat.splitlines() if line.strip().startswith("linkStyle")]
    assert styles and all(line in text.splitlines() for line in styles)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
