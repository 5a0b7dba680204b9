"""Mermaid diagrams of graphs (`flowchart TD`): text only, no binary needed."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from pathlib import Path

from loomgraph.authoring.diagram import (
    STOP_FILL,
    TAKEN,
    TIMES,
    VISITED_FILL,
    RunLike,
    RunOverlay,
    edge_text,
    edges_of,
    load,
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
        link_styles.append(f"    linkStyle 0 stroke:{TAKEN},stroke-width:3px")
    for index, edge in enumerate(edges_of(g), start=1):
        text = edge_text(edge)
        times = taken.get((edge.spec.source, edge.spec.target), 0)
        if times:
            text = f"{text} {TIMES}{times}".strip()
            link_styles.append(f"    linkStyle {index} stroke:{TAKEN},stroke-width:3px")
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
        lines.append(f"    classDef visited fill:{VISITED_FILL},stroke:{TAKEN}")
        if visited:
            lines.append(f"    class {','.join(visited)} visited")
        if stop and stopped in ids:
            lines.append(
                f"    classDef stopped fill:{STOP_FILL[stop]},stroke:{stop},stroke-width:4px"
            )
            lines.append(f"    class {ids[stopped]} stopped")
    return redact("\n".join(lines) + "\n")  # the graph is redacted (`load`); and a run's reason
