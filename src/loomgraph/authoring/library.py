"""Resolve an architecture: a built-in graph name, a path to a YAML file, or a Graph."""

from __future__ import annotations

from pathlib import Path

from loomgraph.authoring.loader import (
    builtin_dir,
    builtin_path,
    load_graph_file_cached,
    resolve_graph_ref,
)
from loomgraph.errors import GraphError, GraphValidationError
from loomgraph.graph.spec import Graph


class UnknownGraph(GraphError):
    """An architecture name or path that names no graph; the message lists the built-ins."""


def builtin_names() -> list[str]:
    """The names of the built-in graphs, as `architecture=` accepts them."""
    return sorted(p.stem.replace("_", "-") for p in builtin_dir().glob("*.yaml"))


def load_graph(architecture: str | Path | Graph) -> Graph:
    """A validated graph for a built-in name, a YAML path or a Graph object: a file's is a
    copy of its own for each call (editing it changes no other graph), a Graph the object
    itself."""
    if isinstance(architecture, Graph):
        if architecture._resolver is None:
            architecture._resolver = resolve_graph_ref
        memo = architecture.memo()  # what it is now: a copy or an edit is validated anew
        if not memo.validated:  # built in Python: validated like a file, once per content
            from loomgraph.authoring.validate import validate_graph

            problems = validate_graph(architecture)
            if problems:
                raise GraphValidationError(problems)
            memo.validated = True
        return architecture
    text = str(architecture)
    is_path = isinstance(architecture, Path) or text.endswith((".yaml", ".yml")) or "/" in text
    path = Path(text) if is_path else builtin_path(text)
    if path is None or not path.is_file():
        what = "graph file" if is_path else "built-in graph"
        raise UnknownGraph(
            f"no {what} {text!r}; built-in graphs: {', '.join(builtin_names())}; "
            "or pass a path to a .yaml file or a Graph object"
        )
    return load_graph_file_cached(path)
