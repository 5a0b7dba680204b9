"""Graphviz diagrams of graphs: DOT text, and SVG laid out by the `dot` program."""

from __future__ import annotations

import html
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

# The unused-ignore code keeps this line valid if pyproject later adds a graphviz override.
import graphviz  # type: ignore[import-untyped, unused-ignore]

from loomgraph.authoring.diagram import (
    CONDITIONAL,
    LEGEND,
    STOP_FILL,
    TAKEN,
    TIMES,
    VISITED_FILL,
    RenderError,
    RunLike,
    RunOverlay,
    back_edges,
    edge_text,
    edges_of,
    free_id,
    load,
    node_detail,
    node_io,
    wrap,
)
from loomgraph.authoring.secrets import redact
from loomgraph.graph.spec import END, Graph


def _e(text: str) -> str:
    return html.escape(text, quote=False)  # quotes are plain text inside an HTML label


def _dot_label(
    name: str,
    kind: str,
    reads: list[str],
    writes: list[str],
    visits: int | None,
    detail: str | None = None,
) -> str:
    """An HTML-like label: name, kind (and what it runs), then reads and writes."""
    rows = [
        f"<TR><TD><B>{_e(name)}</B></TD></TR>",
        f'<TR><TD><FONT POINT-SIZE="10" COLOR="#6b7280"><I>{_e(kind)}</I></FONT></TD></TR>',
    ]
    if detail:
        rows.append(f'<TR><TD><FONT POINT-SIZE="10" COLOR="#6b21a8">{_e(detail)}</FONT></TD></TR>')
    rows.append("<HR/>")
    for title, fields in (("reads", reads), ("writes", writes)):
        for i, line in enumerate(wrap(fields)):
            head = f"{title}: " if i == 0 else ""
            rows.append(
                f'<TR><TD ALIGN="LEFT"><FONT POINT-SIZE="10">{head}{_e(line)}</FONT></TD></TR>'
            )
    if visits is not None:
        rows.append(f'<TR><TD><FONT POINT-SIZE="10"><B>visits: {visits}</B></FONT></TD></TR>')
    table = '<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="2">'
    return f"<{table}{''.join(rows)}</TABLE>>"


def _legend(run: RunOverlay) -> str:
    """The overlay's legend as an HTML-like table: a swatch and a line per mark."""
    stop = run.stop_colour() or "#374151"
    marks = [*LEGEND, (f"stopped here: {run.status}", stop)]
    rows = [
        f'<TR><TD BGCOLOR="{colour}" WIDTH="14"> </TD>'
        f'<TD ALIGN="LEFT"><FONT POINT-SIZE="9">{_e(text)}</FONT></TD></TR>'
        for text, colour in marks
    ]
    table = '<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2" CELLPADDING="1">'
    head = '<TR><TD COLSPAN="2"><FONT POINT-SIZE="9"><B>legend</B></FONT></TD></TR>'
    return f"<{table}{head}{''.join(rows)}</TABLE>>"


def _digraph(graph: Graph, run: RunOverlay | None, *, expand: bool = False) -> graphviz.Digraph:
    dot = graphviz.Digraph(name=graph.name)
    title = f"{graph.name} v{graph.version}"
    heading = f"{title}\n{run.title()}" if run else title
    dot.attr(
        rankdir="TB",
        labelloc="t",
        label=graphviz.escape(heading),
        tooltip=graphviz.escape(graph.description or title),
        fontname="Helvetica",
        forcelabels="true",
        nodesep="0.5",
        compound="true",
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
    entered = bool(run and (run.visits or run.path))
    dot.edge(
        start_id,
        graph.entry or END,
        arrowsize="0.7",
        **({"penwidth": "2.5", "color": TAKEN} if entered else {}),
    )
    _draw(dot, graph, run, prefix="", expand=expand, depth=0)
    if run is not None:
        with dot.subgraph(name="legend") as bottom:
            bottom.attr(rank="sink")
            bottom.node(
                free_id("__legend__", graph.nodes),
                label=_legend(run),
                shape="plaintext",
                style="",
                tooltip="legend",
            )
    return dot


def _draw(
    dot: graphviz.Digraph,
    graph: Graph,
    run: RunOverlay | None,
    *,
    prefix: str,
    expand: bool,
    depth: int,
) -> None:
    """The nodes and edges of `graph` (ids prefixed for an inlined child graph)."""
    io = node_io(graph)
    stop = run.stop_colour() if run else None
    end_id = f"{prefix}{END}"
    end_style = {"fillcolor": "#f3f4f6"}
    if run and run.stopped_at == END and stop:
        end_style = {"color": stop, "penwidth": "3", "fillcolor": STOP_FILL[stop]}
    dot.node(
        end_id,
        label="END",
        shape="doublecircle",
        style="filled",
        fontsize="10",
        width="0.5",
        fixedsize="true",
        tooltip="end of the run" if not prefix else f"end of {graph.name}",
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
            prefix + name,
            label=_dot_label(name, spec.kind, reads, writes, count, node_detail(spec)),
            tooltip=graphviz.escape(spec.description or name),
            **attrs,
        )
        if expand and depth < _MAX_DEPTH and node_detail(spec):
            _inline_child(dot, graph, name, spec.params.get("graph"), prefix, depth)

    taken = run.taken() if run else Counter()
    counted: set[tuple[str, str]] = set()
    back = back_edges(graph)
    for i, edge in enumerate(edges_of(graph)):
        text = edge_text(edge)
        attrs = {}
        if edge.spec.when:
            attrs.update(style="dashed", color=CONDITIONAL, fontcolor=CONDITIONAL)
        # The journal records targets, not edge indexes: parallel edges share one count,
        # shown once (on the first of them) so two labels do not both say it.
        pair = (edge.spec.source, edge.spec.target)
        times = taken.get(pair, 0) if pair not in counted else 0
        if times:
            counted.add(pair)
            attrs.update(penwidth="2.5", color=TAKEN)
            text = f"{text}  {TIMES}{times}".strip()
        label = graphviz.escape(text) if text else ""
        if i in back:
            # A return edge leaves and enters on the right, beside the edge it returns
            # along, not on top of it.
            attrs.update(tailport="e", headport="e")
        dot.edge(
            prefix + edge.spec.source,
            prefix + edge.spec.target,
            label=label,
            tooltip=graphviz.escape(edge.spec.when or text or "default"),
            **attrs,
        )


_MAX_DEPTH = 3


def _inline_child(
    dot: graphviz.Digraph, graph: Graph, name: str, ref: Any, prefix: str, depth: int
) -> None:
    """Draw the graph node `name` runs as a cluster beside it, entered by a dotted edge."""
    try:
        child = graph.resolve_graph(str(ref))
    except Exception:
        return  # validation reports a child graph that cannot be found
    inner = f"{prefix}{name}/"
    with dot.subgraph(name=f"cluster_{inner}") as cluster:
        cluster.attr(
            label=graphviz.escape(f"{name}: {child.name} v{child.version}"),
            style="rounded,dashed",
            color="#6b21a8",
            fontcolor="#6b21a8",
            fontsize="11",
        )
        _draw(cluster, child, None, prefix=inner, expand=True, depth=depth + 1)
    if child.entry in child.nodes:
        dot.edge(
            prefix + name,
            inner + child.entry,
            lhead=f"cluster_{inner}",
            style="dotted",
            color="#6b21a8",
            arrowhead="odot",
            tooltip=graphviz.escape(f"{name} runs {child.name}"),
        )


def to_dot(graph: Graph | str | Path, *, run: RunLike = None, expand: bool = False) -> str:
    """The graph as Graphviz DOT text, with an optional run overlay; `expand` draws the
    graphs that `map` and `subgraph` nodes run inline, as clusters."""
    source: str = _digraph(load(graph), RunOverlay.coerce(run), expand=expand).source
    return redact(source)  # the graph is redacted (`load`); this catches a run's reason too


def to_svg(graph: Graph | str | Path, *, run: RunLike = None, expand: bool = False) -> str:
    """The graph as SVG, laid out by Graphviz's `dot` binary."""
    return to_image(graph, "svg", run=run, expand=expand).decode("utf-8")


def to_image(
    graph: Graph | str | Path, fmt: str, *, run: RunLike = None, expand: bool = False
) -> bytes:
    """The graph laid out by Graphviz's `dot` in `fmt` (svg, png, pdf, json, ...)."""
    dot = graphviz.Source(to_dot(graph, run=run, expand=expand))
    try:
        data: bytes = dot.pipe(format=fmt)
    except graphviz.ExecutableNotFound as err:
        raise RenderError(
            f"{fmt.upper()} needs the Graphviz `dot` program, which is not on PATH; install "
            "Graphviz (`apt-get install graphviz`, `brew install graphviz`, "
            "or see https://graphviz.org/download/), "
            "or render Mermaid instead (to_mermaid / a .mmd file), which needs no binary"
        ) from err
    except subprocess.CalledProcessError as err:
        detail = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else ""
        raise RenderError(f"Graphviz `dot` failed: {detail.strip() or err}") from err
    return data
