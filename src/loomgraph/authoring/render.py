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
from loomgraph.authoring.render_dot import to_dot, to_image, to_svg
from loomgraph.authoring.render_mermaid import to_mermaid
from loomgraph.graph.spec import Graph

__all__ = [
    "RenderError",
    "RunOverlay",
    "render",
    "to_dot",
    "to_image",
    "to_mermaid",
    "to_svg",
]

_TEXT = {
    ".svg": to_svg,
    ".dot": to_dot,
    ".gv": to_dot,
}
_IMAGES = {".png": "png", ".pdf": "pdf"}


def render(
    graph: Graph | str | Path, path: str | Path, *, run: RunLike = None, expand: bool = False
) -> Path:
    """Write a diagram of the graph to `path`, in the format its suffix names (.svg, .png,
    .pdf, .dot, .mmd); `expand` draws the graphs `map`/`subgraph` nodes run inline."""
    target = Path(path)
    suffix = target.suffix.lower()
    # Checked before the drawing, which may run `dot` for a minute, is thrown away.
    if not target.parent.is_dir():
        raise RenderError(f"cannot write {str(target)!r}: no folder {str(target.parent)!r}")
    drawn = _drawn(graph, target, suffix, run, expand)
    try:
        if isinstance(drawn, bytes):
            target.write_bytes(drawn)
        else:
            target.write_text(drawn, encoding="utf-8")
    except OSError as err:  # a folder it may not write in, a full disk
        raise RenderError(f"cannot write {str(target)!r}: {err.strerror or err}") from err
    return target


def _drawn(
    graph: Graph | str | Path, target: Path, suffix: str, run: RunLike, expand: bool
) -> str | bytes:
    """The diagram of `graph` in the format `suffix` names: text, or an image's bytes."""
    if suffix in _IMAGES:
        return to_image(graph, _IMAGES[suffix], run=run, expand=expand)
    if suffix in _TEXT:
        return _TEXT[suffix](graph, run=run, expand=expand)
    if suffix in (".mmd", ".mermaid"):
        return to_mermaid(graph, run=run, expand=expand)
    supported = ", ".join([*_TEXT, *_IMAGES, ".mmd", ".mermaid"])
    raise RenderError(
        f"cannot render to {target.name!r}: unknown suffix "
        f"{target.suffix or '(none)'!r}; supported: {supported}"
    )
