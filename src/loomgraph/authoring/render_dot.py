"""Graphviz diagrams of graphs: DOT text, and SVG laid out by the `dot` program."""

from __future__ import annotations

import functools
import html
import shutil
import subprocess
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

# The unused-ignore code keeps this line valid if pyproject later adds a graphviz override.
import graphviz  # type: ignore[import-untyped, unused-ignore]

from loomgraph.authoring.diagram import (
    CONDITIONAL,
    LEGEND,
    ON_ERROR,
    ON_ERROR_LABEL,
    ON_ERROR_LEGEND,
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
    error_routes,
    load,
    node_detail,
    node_io,
    wrap,
)
from loomgraph.authoring.secrets import redact
from loomgraph.graph.spec import END, Graph

# How long `dot` may take to lay out one graph (seconds) before it is stopped.
DOT_TIMEOUT = 60.0

# The DOT ids are synthetic: the graph is `loomgraph`, nodes `n0`, `n1`, ..., clusters
# `cluster_0`, ..., the markers `start` and `legend`. No name from the graph is ever an id
# (a `:` would make a port, `<...>` an HTML id, `"` or `]` end one and start attributes); the
# names are only ever label and tooltip text, escaped for the kind of label they are in.
_GRAPH_ID = "loomgraph"
_START, _LEGEND = "start", "legend"


def _clean(text: str) -> str:
    """Text on one line, with no character SVG (XML) cannot carry: control characters become
    spaces, lone surrogates and non-characters U+FFFD."""
    out = []
    for c in text:
        kind = unicodedata.category(c)
        if kind == "Cc":
            out.append(" ")
        elif kind == "Cs" or c in "\ufffe\uffff":
            out.append("\ufffd")
        else:
            out.append(c)
    return "".join(out)


def _e(text: str) -> str:
    """Text inside an HTML-like label: `&`, `<` and `>` as entities (quotes are plain text),
    backslashes doubled (Graphviz expands `\\N`, `\\G`, ... in HTML-like labels too)."""
    return html.escape(_clean(text), quote=False).replace("\\", "\\\\")


def _t(text: str) -> str:
    """Text as a plain label or tooltip: backslashes literal (no `\\N`, `\\l` escapes), `&`
    as `&amp;` (Graphviz reads `&#58;` as an entity), never read as an HTML-like `<...>`
    label; `quote` then escapes its double quotes."""
    escaped: str = graphviz.escape(_clean(text).replace("&", "&amp;"))
    return escaped


class _Ids:
    """The synthetic DOT ids of one diagram, per scope (the graph, each inlined child)."""

    def __init__(self) -> None:
        self._nodes: dict[tuple[str, str, bool], str] = {}
        self.declared: set[str] = set()
        self.names: dict[str, str] = {}  # id -> name, for the nodes a graph lacks
        self.clusters = 0

    def node(self, scope: str, name: str, *, end: bool = False) -> str:
        """The id of node `name` (or of the END marker) in `scope`."""
        key = (scope, name, end)
        if key not in self._nodes:
            self._nodes[key] = f"n{len(self._nodes)}"
            self.names[self._nodes[key]] = END if end else name
        return self._nodes[key]

    def declare(self, scope: str, name: str, *, end: bool = False) -> str:
        """The id of a node about to be drawn."""
        node_id = self.node(scope, name, end=end)
        self.declared.add(node_id)
        return node_id

    def cluster(self) -> str:
        """A new cluster's id (`cluster_` makes Graphviz draw a box round it)."""
        self.clusters += 1
        return f"cluster_{self.clusters - 1}"


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


def _legend(run: RunOverlay, routes: bool) -> str:
    """The overlay's legend as an HTML-like table: a swatch and a line per mark (the
    `on_error` route's when the graph has `routes`)."""
    stop = run.stop_colour() or "#374151"
    marks = [*LEGEND, *([ON_ERROR_LEGEND] if routes else []), (f"stopped here: {run.status}", stop)]
    rows = [
        f'<TR><TD BGCOLOR="{colour}" WIDTH="14"> </TD>'
        f'<TD ALIGN="LEFT"><FONT POINT-SIZE="9">{_e(text)}</FONT></TD></TR>'
        for text, colour in marks
    ]
    table = '<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2" CELLPADDING="1">'
    head = '<TR><TD COLSPAN="2"><FONT POINT-SIZE="9"><B>legend</B></FONT></TD></TR>'
    return f"<{table}{head}{''.join(rows)}</TABLE>>"


def _digraph(graph: Graph, run: RunOverlay | None, *, expand: bool = False) -> graphviz.Digraph:
    dot = graphviz.Digraph(name=_GRAPH_ID)
    title = f"{graph.name} v{graph.version}"
    heading = [title, run.title()] if run else [title]
    dot.attr(
        rankdir="TB",
        labelloc="t",
        label="\n".join(map(_t, heading)),
        tooltip=_t(graph.description or title),
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
    dot.node(
        _START,
        label="",
        shape="circle",
        style="filled",
        fillcolor="black",
        width="0.18",
        height="0.18",
        fixedsize="true",
        tooltip="start",
    )
    ids = _Ids()
    entered = bool(run and (run.visits or run.path))
    entry = graph.entry or END
    dot.edge(
        _START,
        ids.node("", entry, end=entry == END),
        arrowsize="0.7",
        **({"penwidth": "2.5", "color": TAKEN} if entered else {}),
    )
    _draw(dot, graph, run, ids, scope="", expand=expand, depth=0)
    for node_id, name in ids.names.items():
        if node_id not in ids.declared:  # an edge to a node the graph lacks: validation says so
            dot.node(node_id, label=_t(name), style="rounded,dashed", tooltip="not in the graph")
    if run is not None:
        with dot.subgraph() as bottom:
            bottom.attr(rank="sink")
            legend = _legend(run, bool(error_routes(graph)))
            bottom.node(_LEGEND, label=legend, shape="plaintext", style="", tooltip="legend")
    return dot


def _draw(
    dot: graphviz.Digraph,
    graph: Graph,
    run: RunOverlay | None,
    ids: _Ids,
    *,
    scope: str,
    expand: bool,
    depth: int,
) -> None:
    """The nodes and edges of `graph` (in their own id scope for an inlined child graph)."""
    io = node_io(graph)
    stop = run.stop_colour() if run else None
    end_style = {"fillcolor": "#f3f4f6"}
    if run and run.stopped_at == END and stop:
        end_style = {"color": stop, "penwidth": "3", "fillcolor": STOP_FILL[stop]}
    dot.node(
        ids.declare(scope, END, end=True),
        label="END",
        shape="doublecircle",
        style="filled",
        fontsize="10",
        width="0.5",
        fixedsize="true",
        tooltip="end of the run" if not scope else _t(f"end of {graph.name}"),
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
            ids.declare(scope, name),
            label=_dot_label(name, spec.kind, reads, writes, count, node_detail(spec)),
            tooltip=_t(spec.description or name),
            **attrs,
        )
        if expand and depth < _MAX_DEPTH and node_detail(spec):
            _inline_child(dot, graph, name, spec.params.get("graph"), ids, scope, depth)

    def node_id(name: str) -> str:
        return ids.node(scope, name, end=name == END)

    taken, routed = run.taken_in(graph) if run else (Counter(), Counter())
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
        if i in back:
            # A return edge leaves and enters on the right, beside the edge it returns
            # along, not on top of it.
            attrs.update(tailport="e", headport="e")
        dot.edge(
            node_id(edge.spec.source),
            node_id(edge.spec.target),
            label=_t(text) if text else "",
            tooltip=_t(edge.spec.when or text or "default"),
            **attrs,
        )
    for source, target in error_routes(graph):
        # Not an edge: where a visit of `source` that failed goes. Dashed and red, so it is
        # not read as a condition; blue and thick, like an edge, once a run took it.
        text, times = ON_ERROR_LABEL, routed.get((source, target), 0)
        attrs = {"color": ON_ERROR, "fontcolor": ON_ERROR}
        if times:
            attrs.update(penwidth="2.5", color=TAKEN)
            text = f"{text}  {TIMES}{times}"
        dot.edge(
            node_id(source),
            node_id(target),
            label=_t(text),
            tooltip=_t(f"a failure of {source} (after its retries) goes to {target}"),
            style="dashed",
            arrowhead="empty",
            **attrs,
        )


_MAX_DEPTH = 3


def _inline_child(
    dot: graphviz.Digraph, graph: Graph, name: str, ref: Any, ids: _Ids, scope: str, depth: int
) -> None:
    """Draw the graph node `name` runs as a cluster beside it, entered by a dotted edge."""
    try:
        child = graph.resolve_graph(str(ref))
    except Exception:
        return  # validation reports a child graph that cannot be found
    cluster_id = ids.cluster()
    with dot.subgraph(name=cluster_id) as cluster:
        cluster.attr(
            label=_t(f"{name}: {child.name} v{child.version}"),
            style="rounded,dashed",
            color="#6b21a8",
            fontcolor="#6b21a8",
            fontsize="11",
        )
        _draw(cluster, child, None, ids, scope=cluster_id, expand=True, depth=depth + 1)
    if child.entry in child.nodes:
        dot.edge(
            ids.node(scope, name),
            ids.node(cluster_id, child.entry),
            lhead=cluster_id,
            style="dotted",
            color="#6b21a8",
            arrowhead="odot",
            tooltip=_t(f"{name} runs {child.name}"),
        )


def to_dot(graph: Graph | str | Path, *, run: RunLike = None, expand: bool = False) -> str:
    """The graph as Graphviz DOT text, with an optional run overlay; `expand` draws the
    graphs that `map` and `subgraph` nodes run inline, as clusters."""
    source: str = _digraph(load(graph), RunOverlay.coerce(run), expand=expand).source
    return redact(source)  # the graph is redacted (`load`); this catches a run's reason too


def to_svg(
    graph: Graph | str | Path,
    *,
    run: RunLike = None,
    expand: bool = False,
    timeout: float = DOT_TIMEOUT,
) -> str:
    """The graph as SVG, laid out by Graphviz's `dot` binary."""
    return to_image(graph, "svg", run=run, expand=expand, timeout=timeout).decode("utf-8")


def to_image(
    graph: Graph | str | Path,
    fmt: str,
    *,
    run: RunLike = None,
    expand: bool = False,
    timeout: float = DOT_TIMEOUT,
) -> bytes:
    """The graph laid out by Graphviz's `dot` in `fmt` (svg, png, pdf, json, ...); `dot` is
    stopped after `timeout` seconds (RenderError), and the last layouts are kept."""
    g = load(graph)
    source = to_dot(g, run=run, expand=expand)
    program = shutil.which("dot")
    if program is None:
        raise RenderError(
            f"{fmt.upper()} needs the Graphviz `dot` program, which is not on PATH; install "
            "Graphviz (`apt-get install graphviz`, `brew install graphviz`, "
            "or see https://graphviz.org/download/), "
            "or render Mermaid instead (to_mermaid / a .mmd file), which needs no binary"
        )
    try:
        return _layout(program, source, fmt, timeout)
    except subprocess.TimeoutExpired as err:
        raise RenderError(
            f"Graphviz `dot` took more than {timeout:g} s to lay out graph {g.name!r} "
            f"({len(g.nodes)} nodes, {len(g.edges)} edges) and was stopped; write .dot or "
            ".mmd instead (no layout needed), or pass a larger `timeout`"
        ) from err


@functools.lru_cache(maxsize=32)
def _layout(program: str, source: str, fmt: str, timeout: float) -> bytes:
    """`dot -T<fmt>` of a DOT text. Cached by the text, which holds the graph and the run's
    position: `serve` asks for the same run picture on every page view."""
    try:
        done = subprocess.run(
            [program, f"-T{fmt}"],
            input=source.encode("utf-8"),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except OSError as err:
        raise RenderError(f"Graphviz `dot` could not be run: {err}") from err
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip()
        raise RenderError(f"Graphviz `dot` failed: {detail or f'exit {done.returncode}'}")
    return done.stdout
