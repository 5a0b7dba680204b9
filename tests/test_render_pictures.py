"""Pictures worth looking at: no label collisions on the built-in graphs (checked on the
coordinates Graphviz reports with `-Tjson`), back edges beside their forward edge, run
overlays with a title and a legend, what `map`/`subgraph` nodes run, and `expand`."""

from __future__ import annotations

import html
import itertools
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loomgraph.authoring.library import builtin_dir, load_graph
from loomgraph.authoring.render import RunOverlay, render, to_dot, to_image
from loomgraph.graph.spec import END, Graph
from loomgraph.protocols import RunRecord, RunStatus, Transition, Usage

pytestmark = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` needed")

BUILTINS = sorted(p.stem.replace("_", "-") for p in builtin_dir().glob("*.yaml"))
Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def every_edge_taken(graph: Graph, times: int = 6) -> dict[str, Any]:
    """An overlay that takes every edge `times` times: the most labels a run can add."""
    path = [(e.source, e.target) for e in graph.edges] * times
    return {
        "path": path,
        "status": "failed",
        "run_id": "run-0123456789abcdef",
        "reason": "ModelError: the provider said no",
        "usage": {"input_tokens": 12345, "output_tokens": 678, "cost_usd": 0.0421},
        "stopped_at": graph.entry,
    }


def text_boxes(draw: list[dict[str, Any]]) -> Iterator[Box]:
    """The boxes of the text an xdot draw list writes (T ops), from its font size."""
    size = 14.0
    for op in draw:
        if op["op"] == "F":
            size = float(op["size"])
        elif op["op"] == "T":
            x, y = op["pt"]
            width = float(op["width"])
            x0 = {"l": x, "c": x - width / 2, "r": x - width}[op["align"]]
            yield (x0, y - 0.25 * size, x0 + width, y + 0.8 * size)


def node_box(obj: dict[str, Any]) -> Box:
    x, y = (float(v) for v in obj["pos"].split(","))
    w, h = float(obj["width"]) * 72 / 2, float(obj["height"]) * 72 / 2
    return (x - w, y - h, x + w, y + h)


def overlap(a: Box, b: Box, slack: float = -3.0) -> bool:
    """Whether two boxes come closer than 3 points (a label right after another reads as
    one, like the two taken-counts issue 16 saw run together)."""
    return (
        a[0] + slack < b[2] and b[0] + slack < a[2] and a[1] + slack < b[3] and b[1] + slack < a[3]
    )


def collisions(layout: dict[str, Any]) -> list[str]:
    """Every pair of label boxes (edge labels, the title, cluster labels) that overlap each
    other or a node."""
    labels: list[tuple[str, Box]] = []
    for edge in layout.get("edges", []):
        for key in ("_ldraw_", "_xldraw_", "_hldraw_", "_tldraw_"):
            labels += [(f"edge {edge['_gvid']} {key}", b) for b in text_boxes(edge.get(key, []))]
    labels += [("title", b) for b in text_boxes(layout.get("_ldraw_", []))]
    nodes: list[tuple[str, Box]] = []
    for obj in layout.get("objects", []):
        if "pos" in obj:
            nodes.append((f"node {obj['name']}", node_box(obj)))
        elif "_ldraw_" in obj:  # a cluster: its label
            labels += [(f"cluster {obj['name']}", b) for b in text_boxes(obj["_ldraw_"])]
    found = [
        f"{a} overlaps {b}"
        for (a, box_a), (b, box_b) in itertools.combinations(labels, 2)
        if a != b and overlap(box_a, box_b)  # the lines of one label may touch
    ]
    found += [
        f"{a} overlaps {b}" for a, box_a in labels for b, box_b in nodes if overlap(box_a, box_b)
    ]
    return found


def name_of(obj: dict[str, Any]) -> str:
    """A node's name, from its label (the DOT ids are synthetic: `n0`, `n1`, ...)."""
    label = str(obj.get("label", ""))
    found = re.search(r"<B>(.*?)</B>", label)
    return html.unescape(found[1]) if found else label


def layout_of(graph: str | Graph, **kw: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(to_image(graph, "json", **kw))
    return data


@pytest.mark.parametrize("expand", [False, True])
@pytest.mark.parametrize("overlay", [False, True])
@pytest.mark.parametrize("name", BUILTINS)
def test_no_label_collides_on_the_builtin_graphs(name: str, overlay: bool, expand: bool) -> None:
    graph = load_graph(name)
    run = every_edge_taken(graph) if overlay else None
    layout = layout_of(graph, run=run, expand=expand)
    assert layout.get("edges"), "the layout has edges to check"
    assert collisions(layout) == []


def test_the_checker_sees_a_collision() -> None:
    # Two labels forced onto one spot: the check must report them, or it proves nothing.
    layout = {
        "edges": [
            {"_gvid": 0, "_ldraw_": [{"op": "T", "pt": [10, 10], "align": "c", "width": 30}]},
            {"_gvid": 1, "_xldraw_": [{"op": "T", "pt": [20, 12], "align": "l", "width": 30}]},
        ],
        "objects": [{"name": "n", "pos": "100,100", "width": "1", "height": "1"}],
    }
    assert collisions(layout) == ["edge 0 _ldraw_ overlaps edge 1 _xldraw_"]


def test_png_and_pdf_are_written(tmp_path: Path) -> None:
    graph = load_graph("react")
    png = render(graph, tmp_path / "react.png", run=every_edge_taken(graph))
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    pdf = render("plan-execute", tmp_path / "pe.pdf", expand=True)
    assert pdf.read_bytes().startswith(b"%PDF")


def spline_xs(edge: dict[str, Any]) -> list[float]:
    return [float(p.split(",")[0]) for p in edge["pos"].replace("e,", "").split()]


def test_back_edges_are_drawn_beside_their_forward_edge() -> None:
    layout = layout_of("react")
    names = {o["_gvid"]: name_of(o) for o in layout["objects"]}
    by_pair = {(names[e["tail"]], names[e["head"]]): e for e in layout["edges"]}
    forward, back = by_pair[("model", "tools")], by_pair[("tools", "model")]
    # The return edge leaves tools on the right and comes round to model's right side.
    assert min(spline_xs(back)) > max(spline_xs(forward)) - 1
    assert "tailport=e" in to_dot("react") and "headport=e" in to_dot("react")


def test_parallel_edges_show_one_count() -> None:
    graph = load_graph("reflexion")
    pairs = [(e.source, e.target) for e in graph.edges]
    repeated = [p for p in pairs if pairs.count(p) > 1]
    dot = to_dot(graph, run={"path": [repeated[0]] * 6} if repeated else {"path": pairs})
    assert dot.count("\N{MULTIPLICATION SIGN}6") == (1 if repeated else 0)


def test_run_overlay_has_a_title_and_a_legend() -> None:
    graph = load_graph("react")
    svg = html.unescape(to_image(graph, "svg", run=every_edge_taken(graph)).decode())
    for text in (
        "run-0123456789abcdef",
        "failed",
        "ModelError: the provider said no",
        "13,023 tokens",
        "$0.0421",
        "legend",
        "edge taken",
        "stopped here: failed",
    ):
        assert text in svg, text
    assert "legend" not in to_image(graph, "svg").decode()


def test_overlay_from_a_journaled_run() -> None:
    record = RunRecord(
        "run-9", "react", "h", None, None, status=RunStatus.BUDGET_EXHAUSTED, reason="cap"
    )
    steps = [
        Transition("run-9", 0, "model", 1, {}, "tools", Usage(input_tokens=10, cost_usd=0.5), 0),
        Transition("run-9", 1, "model/x", 1, {}, END, Usage(input_tokens=99), 0),
        Transition("run-9", 2, "tools", 1, {}, "model", Usage(output_tokens=5), 0),
    ]
    overlay = RunOverlay.from_record(record, steps)
    assert overlay.path == [("model", "tools"), ("tools", "model")]
    assert overlay.usage == Usage(input_tokens=10, output_tokens=5, cost_usd=0.5)
    title = overlay.title()
    assert title.startswith("run run-9 \N{MIDDLE DOT} budget_exhausted \N{MIDDLE DOT} cap")
    assert "15 tokens" in title and "$0.5000" in title


def test_map_and_subgraph_nodes_say_what_they_run(tmp_path: Path) -> None:
    dot = to_dot("plan-execute")
    assert "for each of plan.steps \N{RIGHTWARDS ARROW} react" in dot
    (tmp_path / "outer.yaml").write_text(
        "name: outer\nentry: inner\nnodes:\n  inner: {kind: subgraph, graph: react}\n"
        "edges:\n  - {from: inner, to: END}\n",
        encoding="utf-8",
    )
    assert "runs react" in to_dot(tmp_path / "outer.yaml")


def test_expand_draws_the_graphs_nodes_run_as_clusters() -> None:
    flat, expanded = to_dot("plan-execute"), to_dot("plan-execute", expand=True)
    assert "cluster_" not in flat
    assert "subgraph cluster_0 {" in expanded and "subgraph cluster_1 {" in expanded
    assert "lhead=cluster_" in expanded
    layout = layout_of("plan-execute", expand=True)
    clusters = {
        str(o["label"]).split(":")[0]: {name_of(layout["objects"][i]) for i in o["nodes"]}
        for o in layout["objects"]
        if str(o.get("name", "")).startswith("cluster_")
    }
    assert clusters == {
        "execute_parallel": {"model", "tools", "END"},
        "execute_serial": {"model", "tools", "END"},
    }
