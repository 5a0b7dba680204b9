"""Resolve an architecture: a built-in graph name, a path to a YAML file, or a Graph."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from loomgraph.authoring.loader import load_graph_file
from loomgraph.errors import GraphError, GraphValidationError
from loomgraph.graph.spec import Graph


class UnknownGraph(GraphError):
    """An architecture name or path that names no graph; the message lists the built-ins."""


@cache
def builtin_dir() -> Path:
    """The folder of the built-in graph files (inside the wheel, or the source checkout)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "graphs", here.parent.parent / "graphs"):
        if candidate.is_dir():
            return candidate
    raise GraphError(f"built-in graphs not found next to {here}")


def builtin_names() -> list[str]:
    """The names of the built-in graphs, as `architecture=` accepts them."""
    return sorted(p.stem.replace("_", "-") for p in builtin_dir().glob("*.yaml"))


@cache
def _load_cached(path: Path, mtime_ns: int) -> Graph:
    return load_graph_file(path)


def load_graph(architecture: str | Path | Graph) -> Graph:
    """A validated graph for a built-in name, a YAML path or a Graph object."""
    if isinstance(architecture, Graph):
        if not architecture._validated:  # built in Python: validated like a file, once
            from loomgraph.authoring.validate import validate_graph

            problems = validate_graph(architecture)
            if problems:
                raise GraphValidationError(problems)
            architecture._validated = True
        return architecture
    text = str(architecture)
    builtin = builtin_dir() / f"{text.replace('-', '_')}.yaml"
    is_path = isinstance(architecture, Path) or text.endswith((".yaml", ".yml")) or "/" in text
    path = Path(text) if is_path else builtin
    if not path.is_file():
        what = "graph file" if is_path else "built-in graph"
        raise UnknownGraph(
            f"no {what} {text!r}; built-in graphs: {', '.join(builtin_names())}; "
            "or pass a path to a .yaml file or a Graph object"
        )
    resolved = path.resolve()
    return _load_cached(resolved, resolved.stat().st_mtime_ns)
