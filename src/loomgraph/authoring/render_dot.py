"""Graphviz diagrams of graphs: DOT text, and SVG laid out by the `dot` program."""

from __future__ import annotations

import html
import subprocess
from collections import Counter
from pathlib import Path

# The unused-ignore code keeps this line valid if pyproject later adds a graphviz override.
import graphviz  # type: ignore[import-untyped, unused-ignore]

from loomgraph.authoring.diagram import (
    CONDITIONAL,
    STOP_FILL,
    TAKEN,
    TIMES,
    VISITED_FILL,
    RenderError,
    RunLike,
    RunOverlay,
    edge_text,
    edges_of,
    free_id,
    load,
    node_io,
    wrap,
)
from loomgraph.graph.spec import END, Graph


def _dot_label(
    name: str, kind: str, reads: list[str], writes: list[str], visits: int | None
) -> str:
    """An HTML-like label: name, kind, then reads and writes (Burr-style)."""

    def e(text: str) -> str:
        return html.escape(text, quote=False)  # quotes are plain text inside an HTML label

    rows = [
        f"<TR><TD><B>{e(name)}</B></TD></TR>",
        f'<TR><TD><FONT POINT-SIZE="10" COLOR="#6b7280"><I>{e(kind)}</I></FONT></TD></TR>',
        "<HR/>",
    ]
    for title, fields in (("reads", reads), ("writes", writes)):
        for i, line in enumerate(wrap(fields)):
            head = f"{title}: " if i == 0 else ""
            rows.append(
                f'<TR><TD ALIGN="LEFT"><FONT POINT-SIZE="10">{head}{e(line)}</FONT></TD></TR>'
            )
    if visits is not None:
        rows.append(f'<TR><TD><FONT POINT-SIZE="10"><B>visits: {visits}</B></FONT></TD></TR>')
    table = '<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="2">'
    return f"<{table}{''.join(rows)}</TABLE>>"


def _digraph(graph: Graph, run: RunOverlay | None) -> graphviz.Digraph:
    io = node_io(graph)
    dot = graphviz.Digraph(name=graph.name)
    title = f"{graph.name} v{graph.version}"
    dot.attr(
        rankdir="TB",
        labelloc="t",
        label=graphviz.escape(title),
        tooltip=graphviz.escape(graph.description or title),
        fontname="Helvetica",
    )
    dot.attr(
        "node",
        fontname="Helvetica",
        shape="box",
        style="rounded,filled",
        fillcolor="white",
        color="#374151",
    )
    dot.attr("edge", fontname="Helvetica", fontsize="10", color="#374151")
    stop = run.stop_colour() if run else None

    start_id = free_id("__start__", graph.nodes)
    dot.node(
        start_id,
        label="",
        shape="circle",
        style="filled",
        fillcolor="black",
        width="0.18",
        height="0.18",
        fixedsize="true",
        tooltip="start",
    )
    end_style = {"fillcolor": "#f3f4f6"}
    if run and run.stopped_at == END and stop:
        end_style = {"color": stop, "penwidth": "3", "fillcolor": STOP_FILL[stop]}
    dot.node(
        END,
        label="END",
        shape="doublecircle",
        style="filled",
        fontsize="10",
        width="0.5",
        fixedsize="true",
        tooltip="end of the run",
        **end_style,
    )

    for name, spec in graph.nodes.items():
        reads, writes = io.get(name, ([], []))
        count = run.visits.get(name, 0) if run else None
        attrs: dict[str, str] = {}
        if count:
            attrs["fillcolor"] = VISITED_FILL
        if run and run.stopped_at == name and stop:
            attrs.update(color=stop, penwidth="3", fillcolor=STOP_FILL[stop])
        dot.node(
            name,
            label=_dot_label(name, spec.kind, reads, writes, count),
            tooltip=graphviz.escape(spec.description or name),
            **attrs,
        )

    entered = bool(run and (run.visits or run.path))
    dot.edge(
        start_id,
        graph.entry or END,
        arrowsize="0.7",
        **({"penwidth": "2.5", "color": TAKEN} if entered else {}),
    )
    taken = run.taken() if run else Counter()
    for edge in edges_of(graph):
        text = edge_text(edge)
        attrs = {}
        if edge.spec.when:
            attrs.update(style="dashed", color=CONDITIONAL, fontcolor=CONDITIONAL)
        # The journal records targets, not edge indexes, so parallel edges share a count.
        times = taken.get((edge.spec.source, edge.spec.target), 0)
        if times:
            attrs.update(penwidth="2.5", color=TAKEN)
            text = f"{text}  {TIMES}{times}".strip()
        dot.edge(
            edge.spec.source,
            edge.spec.target,
            label=graphviz.escape(text) if text else "",
            tooltip=graphviz.escape(edge.spec.when or text or "default"),
            **attrs,
        )
    return dot


def to_dot(graph: Graph | str | Path, *, run: RunLike = None) -> str:
    """The graph as Graphviz DOT text, with an optional run overlay."""
    source: str = _digraph(load(graph), RunOverlay.coerce(run)).source
    return source


def to_svg(graph: Graph | str | Path, *, run: RunLike = None) -> str:
    """The graph as SVG, laid out by Graphviz's `dot` binary."""
    dot = _digraph(load(graph), RunOverlay.coerce(run))
    try:
        svg: str = dot.pipe(format="svg", encoding="utf-8")
    except graphviz.ExecutableNotFound as err:
        raise RenderError(
            "SVG needs the Graphviz `dot` program, which is not on PATH; install Graphviz "
            "(`apt-get install graphviz`, `brew install graphviz`, "
            "or see https://graphviz.org/download/), "
            "or render Mermaid instead (to_mermaid / a .mmd file), which needs no binary"
        ) from err
    except subprocess.CalledProcessError as err:
        detail = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else ""
        raise RenderError(f"Graphviz `dot` failed: {detail.strip() or err}") from err
    return svg
