"""Mermaid diagrams of graphs (`flowchart TD`): text only, no binary needed."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from pathlib import Path

from loomgraph.authoring.diagram import (
    ON_ERROR,
    ON_ERROR_LABEL,
    STOP_FILL,
    TAKEN,
    TIMES,
    VISITED_FILL,
    RunLike,
    RunOverlay,
    edge_text,
    edges_of,
    error_routes,
    load,
    node_detail,
    node_io,
)
from loomgraph.authoring.secrets import redact
from loomgraph.graph.spec import END, Graph

# Characters that end or confuse a Mermaid label, as Mermaid entity codes (`#name;`/`#nn;`);
# `%` so that no `%%{…}%%` directive (which Mermaid finds anywhere in the file) can form.
_MERMAID_ENTITIES = {
    '"': "#quot;",
    "<": "#lt;",
    ">": "#gt;",
    "&": "#amp;",
    "#": "#35;",
    "%": "#37;",
    "|": "#124;",
    "[": "#91;",
    "]": "#93;",
    "(": "#40;",
    ")": "#41;",
    "{": "#123;",
    "}": "#125;",
    "`": "#96;",
    ";": "#59;",
}


def _flat(text: str) -> str:
    """Text on one line: every line break Mermaid or a browser may honour (`\\n`, `\\r`,
    `\\v`, `\\f`, U+001C-U+001E, U+0085, U+2028, U+2029) and every other control
    character becomes a space; runs of spaces become one. Every text a Mermaid file
    carries from the graph passes here (`_mm` for labels, `_comment` for the header)."""
    cleaned = "".join(
        " " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs") else c for c in text
    )
    return " ".join(cleaned.split())


def _mm(text: str) -> str:
    """Text made safe inside a Mermaid label: one line, special characters as entities."""
    return "".join(_MERMAID_ENTITIES.get(c, c) for c in _flat(text))


def _comment(text: str) -> str:
    """Text made safe inside a `%%` comment: one line, and no `%` (no directive)."""
    return _flat(text).replace("%", "#37;")


def _mermaid_ids(graph: Graph, prefix: str = "") -> dict[str, str]:
    """Mermaid ids for the nodes: names made safe (and never the keyword `end`); `prefix`
    keeps an inlined child graph's ids apart from its parent's. A name an edge, a route or
    the entry gives that the graph lacks gets an id too (`_missing`)."""
    ids: dict[str, str] = {END: prefix + "__end__"}

    def add(name: str, kind: str) -> None:
        base = prefix + kind + re.sub(r"\W", "_", name, flags=re.ASCII)
        candidate, n = base, 1
        while candidate in ids.values():
            n += 1
            candidate = f"{base}_{n}"
        ids[name] = candidate

    for name in graph.nodes:
        add(name, "n_")
    for name in _named(graph):
        if name not in ids:
            add(name, "u_")  # drawn, so the diagram shows it; validation reports the problem
    return ids


def _named(graph: Graph) -> list[str]:
    """Every node name the graph's entry, edges and `on_error` routes give."""
    ends = [(e.spec.source, e.spec.target) for e in edges_of(graph)] + error_routes(graph)
    return [graph.entry or END, *(name for pair in ends for name in pair)]


def _missing(graph: Graph, ids: dict[str, str], indent: str) -> list[str]:
    """The boxes of the names the graph lacks: dashed (class `missing`), as the DOT drawing
    draws them, labelled with the name as the graph gives it."""
    return [
        f'{indent}{node_id}["{_mm(name)}"]:::missing'
        for name, node_id in ids.items()
        if name not in graph.nodes and name != END
    ]


def _node_line(name: str, kind: str, io: tuple[list[str], list[str]], visits: int) -> str:
    """A node's label: name, kind, reads, writes, and visits when it has some."""
    reads, writes = io
    parts = [
        f"<b>{_mm(name)}</b>",
        f"<i>{_mm(kind)}</i>",
        "reads: " + _mm(", ".join(reads) or "—"),
        "writes: " + _mm(", ".join(writes) or "—"),
    ]
    if visits:
        parts.append(f"visits: {visits}")
    return f'["{"<br/>".join(parts)}"]'


_MAX_DEPTH = 3


class _Links:
    """The links of one diagram, numbered as Mermaid numbers them (in the order they are
    written, inlined child graphs' too), with the `linkStyle` lines of those styled."""

    def __init__(self) -> None:
        self.count = 0
        self.styles: list[str] = []

    def add(self, source: str, arrow: str, text: str, target: str, style: str = "") -> str:
        """The line of a link from `source` to `target`, labelled `text`; `style` (CSS) is
        kept for its `linkStyle` line."""
        if style:
            self.styles.append(f"    linkStyle {self.count} {style}")
        self.count += 1
        label = f"|{_mm(text)}|" if text else ""
        return f"{source} {arrow}{label} {target}"


def _edge_links(
    graph: Graph,
    ids: dict[str, str],
    links: _Links,
    taken: Counter[tuple[str, str]],
    routed: Counter[tuple[str, str]],
) -> list[str]:
    """The lines of a graph's edges, then of its `on_error` routes: dotted, red and labelled
    `on_error` (a route is where a failed visit goes, not an edge); a step a run took is
    thick and blue, with how many times."""
    lines = []
    for edge in edges_of(graph):
        text, style = edge_text(edge), ""
        times = taken.get((edge.spec.source, edge.spec.target), 0)
        if times:
            text, style = f"{text} {TIMES}{times}".strip(), f"stroke:{TAKEN},stroke-width:3px"
        arrow = "-.->" if edge.spec.when else "-->"
        source, target = ids[edge.spec.source], ids[edge.spec.target]
        lines.append(links.add(source, arrow, text, target, style))
    for source, target in error_routes(graph):
        text, style = ON_ERROR_LABEL, f"stroke:{ON_ERROR},color:{ON_ERROR}"
        if times := routed.get((source, target), 0):
            text, style = f"{text} {TIMES}{times}", f"stroke:{TAKEN},stroke-width:3px"
        lines.append(links.add(ids[source], "-.->", text, ids[target], style))
    return lines


def _children(
    graph: Graph, ids: dict[str, str], indent: str, depth: int, seq: list[int], links: _Links
) -> list[str]:
    """The graphs `map`/`subgraph` nodes of `graph` run, each as a `subgraph` block entered
    by a dotted `runs` link; no overlay (the journal's top-level path is not theirs)."""
    lines: list[str] = []
    for name, spec in graph.nodes.items():
        if depth >= _MAX_DEPTH or not node_detail(spec):
            continue
        try:
            child = graph.resolve_graph(str(spec.params.get("graph")))
        except Exception:
            continue  # validation reports a child graph that cannot be found
        seq[0] += 1
        block = f"c{seq[0]}"
        inner, child_ids, io = indent + "    ", _mermaid_ids(child, f"{block}_"), node_io(child)
        lines.append(f'{indent}subgraph {block}["{_mm(f"{name}: {child.name} v{child.version}")}"]')
        lines.append(f'{inner}{child_ids[END]}((("END")))')
        for child_name, child_spec in child.nodes.items():
            shape = _node_line(child_name, child_spec.kind, io.get(child_name, ([], [])), 0)
            lines.append(f"{inner}{child_ids[child_name]}{shape}")
        lines += _missing(child, child_ids, inner)
        none: Counter[tuple[str, str]] = Counter()
        lines += [inner + line for line in _edge_links(child, child_ids, links, none, none)]
        lines += _children(child, child_ids, inner, depth + 1, seq, links)
        lines.append(f"{indent}end")
        if child.entry in child.nodes:
            lines.append(indent + links.add(ids[name], "-.->", "runs", child_ids[child.entry]))
    return lines


def to_mermaid(graph: Graph | str | Path, *, run: RunLike = None, expand: bool = False) -> str:
    """The graph as a Mermaid `flowchart TD`, with an optional run overlay; `expand` draws
    the graphs that `map` and `subgraph` nodes run inline, as Mermaid subgraphs."""
    g, overlay = load(graph), RunOverlay.coerce(run)
    io, ids = node_io(g), _mermaid_ids(g)
    stop = overlay.stop_colour() if overlay else None
    description = _comment(g.description or "")
    # The comment goes after the header: older Mermaid versions reject anything before it.
    lines = [
        "flowchart TD",
        f"    %% {_comment(g.name)} v{_comment(g.version)}"
        + (f": {description}" if description else ""),
        '    __start__(("start"))',
        '    __end__((("END")))',
    ]
    for name, spec in g.nodes.items():
        visits = overlay.visits.get(name, 0) if overlay else 0
        lines.append(
            f"    {ids[name]}{_node_line(name, spec.kind, io.get(name, ([], [])), visits)}"
        )
    lines += _missing(g, ids, "    ")

    taken, routed = overlay.taken_in(g) if overlay else (Counter(), Counter())
    links = _Links()
    entered = overlay and (overlay.visits or overlay.path)
    start_style = f"stroke:{TAKEN},stroke-width:3px" if entered else ""
    lines.append("    " + links.add("__start__", "-->", "", ids[g.entry or END], start_style))
    lines += ["    " + line for line in _edge_links(g, ids, links, taken, routed)]
    if expand:
        lines += _children(g, ids, "    ", 0, [0], links)
    lines += links.styles

    lines += [
        "    classDef startMarker fill:#000,stroke:#000,color:#fff",
        "    classDef endMarker fill:#f3f4f6,stroke:#374151",
        "    classDef missing stroke-dasharray:5 5",
        "    class __start__ startMarker",
        "    class __end__ endMarker",
    ]
    if overlay:
        # One class per node: a stop highlight replaces the visited fill rather than mixing.
        stopped = overlay.stopped_at if stop else None
        visited = [ids[n] for n in g.nodes if overlay.visits.get(n) and n != stopped]
        lines.append(f"    classDef visited fill:{VISITED_FILL},stroke:{TAKEN}")
        if visited:
            lines.append(f"    class {','.join(visited)} visited")
        if stop and stopped in ids:
            lines.append(
                f"    classDef stopped fill:{STOP_FILL[stop]},stroke:{stop},stroke-width:4px"
            )
            lines.append(f"    class {ids[stopped]} stopped")
    return redact("\n".join(lines) + "\n")  # the graph is redacted (`load`); and a run's reason
