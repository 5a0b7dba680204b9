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
    """A validated graph for a built-in name, a graph file's path (`graph_file`) or a Graph
    object: a file's is a copy of its own for each call (editing it changes no other graph),
    a Graph the object itself. UnknownGraph when the name is neither; TypeError for a value
    of another type."""
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
    if not isinstance(architecture, str | Path):
        raise TypeError(
            "architecture must be a built-in graph's name, a graph file's path or a Graph, "
            f"not {type(architecture).__name__}: {architecture!r}"
        )
    path = graph_file(architecture)
    if path is None:
        raise UnknownGraph(unknown_graph(architecture))
    return load_graph_file_cached(path)


def graph_file(name: str | Path) -> Path | None:
    """The graph file `name` names, by one rule for `Agent(architecture=)`, `run --graph`,
    `render` and `validate`: a built-in graph's name first (so a stray file called `react`
    never replaces it), then an existing file at that path, whatever its suffix (`Loop.YAML`,
    none). None when it names neither."""
    if not isinstance(name, Path):
        builtin = builtin_path(name)  # looked up, never a path: `../x` is no built-in
        if builtin is not None:
            return builtin
    path = Path(name)
    return path if path.is_file() else None


def unknown_graph(name: str | Path) -> str:
    """Why `name` names no graph (`UnknownGraph`'s message): the file it names is missing,
    or no built-in has it."""
    text = str(name)
    names = ", ".join(builtin_names())
    if isinstance(name, Path) or "/" in text or Path(text).suffix.lower() in (".yaml", ".yml"):
        return f"no graph file {text!r}; built-in graphs: {names}"
    return f"no built-in graph {text!r} and no file of that name; built-in graphs: {names}"
