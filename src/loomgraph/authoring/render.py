"""Diagrams of graphs: Graphviz DOT and SVG, Mermaid, with an optional overlay of a run's path.

A node shows its name, its kind and the state fields it reads and writes; an edge shows its
`when` condition and, when its node has several edges, its position (the first that holds
wins). A run overlay adds visit counts, the edges taken and the node where the run stopped.
"""

from __future__ import annotations

import html
import re
import subprocess
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# The unused-ignore code keeps this line valid if pyproject later adds a graphviz override.
import graphviz  # type: ignore[import-untyped, unused-ignore]

from loomgraph.errors import GraphError
from loomgraph.graph.spec import END, EdgeSpec, Graph
from loomgraph.protocols.paths import NodePath

__all__ = [
    "RenderError",
    "RunOverlay",
    "render",
    "to_dot",
    "to_mermaid",
    "to_svg",
]


class RenderError(GraphError):
    """A diagram could not be produced: no `dot` binary, `dot` failed, or an unknown format."""


class _Step(Protocol):
    """What the overlay needs from a journal transition."""

    @property
    def node(self) -> str: ...

    @property
    def next_node(self) -> str: ...


# Statuses drawn orange: the run stopped on purpose or at a cap, it did not break.
_STOPPED = {"limit_reached", "budget_exhausted", "interrupted", "awaiting_approval", "cancelled"}


@dataclass(slots=True)
class RunOverlay:
    """A run's path to draw over its graph: visits per node, edges taken, where it stopped."""

    visits: dict[str, int] = field(default_factory=dict)
    path: list[tuple[str, str]] = field(default_factory=list)
    stopped_at: str | None = None
    status: str = "completed"

    def __post_init__(self) -> None:
        self.path = [(str(a), str(b)) for a, b in self.path]
        # A path alone is enough: every step taken is a visit of its source node.
        if not self.visits and self.path:
            self.visits = dict(Counter(a for a, _ in self.path))

    @classmethod
    def from_transitions(
        cls,
        transitions: Iterable[_Step],
        *,
        status: str = "completed",
        stopped_at: str | None = None,
    ) -> RunOverlay:
        """An overlay from journal transitions; `stopped_at` defaults to the last target."""
        # Steps inside subgraphs carry qualified names (`plan/model`) and their own END;
        # they are not edges of this graph, so they are left out.
        steps = [(t.node, t.next_node) for t in transitions if NodePath.parse(t.node).is_top_level]
        if stopped_at is None and steps:
            stopped_at = steps[-1][1]
        return cls(path=steps, stopped_at=stopped_at, status=status)

    @classmethod
    def coerce(cls, run: RunOverlay | Mapping[str, Any] | None) -> RunOverlay | None:
        """An overlay from an overlay, a mapping of its fields, or None."""
        if run is None or isinstance(run, RunOverlay):
            return run
        unknown = set(run) - {"visits", "path", "stopped_at", "status"}
        if unknown:
            raise RenderError(
                f"unknown run overlay keys: {', '.join(sorted(unknown))}; "
                "expected visits, path, stopped_at, status"
            )
        return cls(
            visits=dict(run.get("visits") or {}),
            path=list(run.get("path") or []),
            stopped_at=run.get("stopped_at"),
            status=str(run.get("status", "completed")),
        )

    def taken(self) -> Counter[tuple[str, str]]:
        """How many times each (from, to) edge was taken."""
        return Counter(self.path)

    def stop_colour(self) -> str | None:
        """The highlight colour of the node where the run stopped, if it is highlighted."""
        if self.stopped_at is None or self.status == "running":
            return None
        if self.status == "failed":
            return "#dc2626"
        if self.status == "completed":
            return "#16a34a"
        return "#ea580c"  # any other stop (limits, budget, interrupts) is a deliberate halt


RunLike = RunOverlay | Mapping[str, Any] | None

_VISITED_FILL = "#dbeafe"
_STOP_FILL = {"#dc2626": "#fee2e2", "#16a34a": "#dcfce7", "#ea580c": "#ffedd5"}
_CONDITIONAL = "#2563eb"
_TAKEN = "#1d4ed8"
_TIMES = "\N{MULTIPLICATION SIGN}"


# --------------------------------------------------------------------------- shared model


@dataclass(slots=True)
class _Edge:
    spec: EdgeSpec
    order: int | None  # 1-based position among its node's edges, when there are several
    is_else: bool  # an unconditioned edge of a node that also has conditional ones


def _io(graph: Graph) -> dict[str, tuple[list[str], list[str]]]:
    """Reads and writes per node, with the kinds' defaults filled in."""
    from loomgraph.graph.compiled import compile_graph
    from loomgraph.graph.registry import node_kind

    try:
        nodes = compile_graph(graph).nodes
        return {name: (n.reads(), n.writes()) for name, n in nodes.items()}
    except Exception:
        pass  # a broken graph is still worth drawing while it is edited; validation reports it
    out: dict[str, tuple[list[str], list[str]]] = {}
    for name, spec in graph.nodes.items():
        try:
            kind = node_kind(spec.kind)
            defaults = (list(kind.default_reads), list(kind.default_writes))
        except GraphError:
            defaults = ([], [])
        out[name] = (
            spec.reads if spec.reads is not None else defaults[0],
            spec.writes if spec.writes is not None else defaults[1],
        )
    return out


def _edges(graph: Graph) -> list[_Edge]:
    """The edges in file order, with their order numbers and `else` flags."""
    out = []
    for edge in graph.edges:
        siblings = graph.outgoing(edge.source)
        # By identity: two identical edges (a harmless duplicate) still get their own numbers.
        position = next(i for i, e in enumerate(siblings, start=1) if e is edge)
        order = position if len(siblings) > 1 else None
        is_else = edge.when is None and any(e.when for e in siblings)
        out.append(_Edge(edge, order, is_else))
    return out


def _edge_text(edge: _Edge) -> str:
    cond = edge.spec.when or ("else" if edge.is_else else "")
    prefix = f"[{edge.order}] " if edge.order is not None else ""
    return f"{prefix}{cond}".strip()


def _wrap(fields: Sequence[str], per_line: int = 3) -> list[str]:
    """Field names a few per line, so a node with many fields stays narrow."""
    if not fields:
        return ["—"]
    return [", ".join(fields[i : i + per_line]) for i in range(0, len(fields), per_line)]


def _free_id(base: str, taken: Iterable[str]) -> str:
    used = set(taken)
    while base in used:
        base = f"_{base}_"
    return base


def _load(graph: Graph | str | Path) -> Graph:
    """The graph, loaded if named; every public function starts here."""
    # Register the built-in kinds, for validation and their reads/writes defaults; imported
    # lazily because the node kinds import the graph package this module belongs to.
    import loomgraph.nodes  # noqa: F401
    from loomgraph.authoring.library import load_graph

    if isinstance(graph, Graph):
        return graph

    return load_graph(graph)


# --------------------------------------------------------------------------- Graphviz


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
        for i, line in enumerate(_wrap(fields)):
            head = f"{title}: " if i == 0 else ""
            rows.append(
                f'<TR><TD ALIGN="LEFT"><FONT POINT-SIZE="10">{head}{e(line)}</FONT></TD></TR>'
            )
    if visits is not None:
        rows.append(f'<TR><TD><FONT POINT-SIZE="10"><B>visits: {visits}</B></FONT></TD></TR>')
    table = '<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="2">'
    return f"<{table}{''.join(rows)}</TABLE>>"


def _digraph(graph: Graph, run: RunOverlay | None) -> graphviz.Digraph:
    io = _io(graph)
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

    start_id = _free_id("__start__", graph.nodes)
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
        end_style = {"color": stop, "penwidth": "3", "fillcolor": _STOP_FILL[stop]}
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
            attrs["fillcolor"] = _VISITED_FILL
        if run and run.stopped_at == name and stop:
            attrs.update(color=stop, penwidth="3", fillcolor=_STOP_FILL[stop])
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
        **({"penwidth": "2.5", "color": _TAKEN} if entered else {}),
    )
    taken = run.taken() if run else Counter()
    for edge in _edges(graph):
        text = _edge_text(edge)
        attrs = {}
        if edge.spec.when:
            attrs.update(style="dashed", color=_CONDITIONAL, fontcolor=_CONDITIONAL)
        # The journal records targets, not edge indexes, so parallel edges share a count.
        times = taken.get((edge.spec.source, edge.spec.target), 0)
        if times:
            attrs.update(penwidth="2.5", color=_TAKEN)
            text = f"{text}  {_TIMES}{times}".strip()
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
    source: str = _digraph(_load(graph), RunOverlay.coerce(run)).source
    return source


def to_svg(graph: Graph | str | Path, *, run: RunLike = None) -> str:
    """The graph as SVG, laid out by Graphviz's `dot` binary."""
    dot = _digraph(_load(graph), RunOverlay.coerce(run))
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


# --------------------------------------------------------------------------- Mermaid

# Characters that end or confuse a Mermaid label, as Mermaid entity codes (`#name;`/`#nn;`).
_MERMAID_ENTITIES = {
    '"': "#quot;",
    "<": "#lt;",
    ">": "#gt;",
    "&": "#amp;",
    "#": "#35;",
    "|": "#124;",
    "[": "#91;",
    "]": "#93;",
    "(": "#40;",
    ")": "#41;",
    "{": "#123;",
    "}": "#125;",
    "`": "#96;",
    ";": "#59;",
    "\n": " ",
    "\r": " ",
}


def _mm(text: str) -> str:
    """Text made safe inside a Mermaid label."""
    return "".join(_MERMAID_ENTITIES.get(c, c) for c in text)


def _mermaid_ids(graph: Graph) -> dict[str, str]:
    """Mermaid ids for the nodes: names made safe (and never the keyword `end`)."""
    ids: dict[str, str] = {}
    for name in graph.nodes:
        base = "n_" + re.sub(r"\W", "_", name, flags=re.ASCII)
        candidate, n = base, 1
        while candidate in ids.values():
            n += 1
            candidate = f"{base}_{n}"
        ids[name] = candidate
    ids[END] = "__end__"
    return ids


def to_mermaid(graph: Graph | str | Path, *, run: RunLike = None) -> str:
    """The graph as a Mermaid `flowchart TD`, with an optional run overlay."""
    g, overlay = _load(graph), RunOverlay.coerce(run)
    io, ids = _io(g), _mermaid_ids(g)
    stop = overlay.stop_colour() if overlay else None
    description = " ".join((g.description or "").split())
    # The comment goes after the header: older Mermaid versions reject anything before it.
    lines = [
        "flowchart TD",
        f"    %% {g.name} v{g.version}" + (f": {description}" if description else ""),
        '    __start__(("start"))',
        '    __end__((("END")))',
    ]
    for name, spec in g.nodes.items():
        reads, writes = io.get(name, ([], []))
        parts = [
            f"<b>{_mm(name)}</b>",
            f"<i>{_mm(spec.kind)}</i>",
            "reads: " + _mm(", ".join(reads) or "—"),
            "writes: " + _mm(", ".join(writes) or "—"),
        ]
        if overlay and overlay.visits.get(name):
            parts.append(f"visits: {overlay.visits[name]}")
        lines.append(f'    {ids[name]}["{"<br/>".join(parts)}"]')

    def node_id(name: str) -> str:
        # An edge to a node the graph lacks still draws (validation reports the problem).
        return ids.get(name) or "u_" + re.sub(r"\W", "_", name, flags=re.ASCII)

    taken = overlay.taken() if overlay else Counter()
    link_styles: list[str] = []
    entry = g.entry or END
    lines.append(f"    __start__ --> {node_id(entry)}")
    if overlay and (overlay.visits or overlay.path):
        link_styles.append(f"    linkStyle 0 stroke:{_TAKEN},stroke-width:3px")
    for index, edge in enumerate(_edges(g), start=1):
        text = _edge_text(edge)
        times = taken.get((edge.spec.source, edge.spec.target), 0)
        if times:
            text = f"{text} {_TIMES}{times}".strip()
            link_styles.append(f"    linkStyle {index} stroke:{_TAKEN},stroke-width:3px")
        arrow = "-.->" if edge.spec.when else "-->"
        label = f"|{_mm(text)}|" if text else ""
        lines.append(f"    {node_id(edge.spec.source)} {arrow}{label} {node_id(edge.spec.target)}")
    lines += link_styles

    lines += [
        "    classDef startMarker fill:#000,stroke:#000,color:#fff",
        "    classDef endMarker fill:#f3f4f6,stroke:#374151",
        "    class __start__ startMarker",
        "    class __end__ endMarker",
    ]
    if overlay:
        # One class per node: a stop highlight replaces the visited fill rather than mixing.
        stopped = overlay.stopped_at if stop else None
        visited = [ids[n] for n in g.nodes if overlay.visits.get(n) and n != stopped]
        lines.append(f"    classDef visited fill:{_VISITED_FILL},stroke:{_TAKEN}")
        if visited:
            lines.append(f"    class {','.join(visited)} visited")
        if stop and stopped in ids:
            lines.append(
                f"    classDef stopped fill:{_STOP_FILL[stop]},stroke:{stop},stroke-width:4px"
            )
            lines.append(f"    class {ids[stopped]} stopped")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- files

_WRITERS = {
    ".svg": to_svg,
    ".dot": to_dot,
    ".gv": to_dot,
    ".mmd": to_mermaid,
    ".mermaid": to_mermaid,
}


def render(graph: Graph | str | Path, path: str | Path, *, run: RunLike = None) -> Path:
    """Write a diagram of the graph to `path`, in the format its suffix names."""
    target = Path(path)
    writer = _WRITERS.get(target.suffix.lower())
    if writer is None:
        raise RenderError(
            f"cannot render to {target.name!r}: unknown suffix "
            f"{target.suffix or '(none)'!r}; supported: {', '.join(_WRITERS)}"
        )
    target.write_text(writer(graph, run=run), encoding="utf-8")
    return target
