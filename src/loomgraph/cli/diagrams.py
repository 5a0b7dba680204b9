"""Diagram files from the command line: the formats of `authoring.render`, and PNG and PDF
through Graphviz's `dot`."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_diagram(graph: Any, path: Path, run: Any = None) -> None:
    """Write a diagram: .png and .pdf through Graphviz's `dot`, the rest as `render` does."""
    from loomgraph.authoring.render import render, to_dot

    if path.suffix.lower() not in (".png", ".pdf"):
        render(graph, path, run=run)
        return
    import graphviz

    try:
        data = graphviz.Source(to_dot(graph, run=run)).pipe(format=path.suffix[1:].lower())
    except graphviz.ExecutableNotFound:
        raise OSError("PNG and PDF need Graphviz's `dot` (apt-get install graphviz)") from None
    path.write_bytes(data)
