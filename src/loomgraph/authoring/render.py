"""Diagrams of graphs: Graphviz DOT and SVG, Mermaid, with an optional overlay of a run's path.

A node shows its name, its kind and the state fields it reads and writes; an edge shows its
`when` condition and, when its node has several edges, its position (the first that holds
wins). A run overlay adds visit counts, the edges taken and the node where the run stopped.
The drawing lives in `diagram` (what every format shows, the overlay), `render_dot` and
`render_mermaid`; this module is the public entry point.
"""

from __future__ import annotations

from pathlib import Path

from loomgraph.authoring.diagram import RenderError, RunLike, RunOverlay
from loomgraph.authoring.render_dot import to_dot, to_svg
from loomgraph.authoring.render_mermaid import to_mermaid
from loomgraph.graph.spec import Graph

__all__ = [
    "RenderError",
    "RunOverlay",
    "render",
    "to_dot",
    "to_mermaid",
    "to_svg",
]

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
