"""Node kinds: the base class and the registry by name (plus the `loomgraph.nodes` entry points)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

from loomgraph.errors import GraphError
from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.spec import Graph, NodeSpec

ENTRY_POINT_GROUP = "loomgraph.nodes"


class NoParams(BaseModel):
    """Parameters of a node kind that takes none."""

    model_config = ConfigDict(extra="forbid")


class NodeKind:
    """Base class of node kinds.

    A kind declares its `Params` (a pydantic model of the YAML keys it accepts), which of
    them are Jinja2 `templates`, and the fields it reads and writes when the YAML does not
    say. `run` gets the fields the node reads and a `NodeContext`, and returns a patch.

    What a kind writes is declared so that validation can check a node's `writes:` against
    it (`missing-write`): `default_writes` (fixed fields), `output_params` (params whose
    value names a field, like `llm`'s `output`) and `implicit_writes` (bookkeeping such as
    `usage` that is part of every node's `writes` without being listed). A kind whose fields
    depend on its params in another way overrides `kind_writes`.
    """

    Params: ClassVar[type[BaseModel]] = NoParams
    templates: ClassVar[tuple[str, ...]] = ()
    default_reads: ClassVar[tuple[str, ...]] = ()
    default_writes: ClassVar[tuple[str, ...]] = ()
    output_params: ClassVar[tuple[str, ...]] = ()
    implicit_writes: ClassVar[tuple[str, ...]] = ()
    # Names the kind's templates see besides the state (e.g. `item` in a map).
    template_names: ClassVar[frozenset[str]] = frozenset()
    kind_name: ClassVar[str] = ""

    def __init__(self, name: str, spec: NodeSpec, params: BaseModel) -> None:
        self.name = name
        self.spec = spec
        self.params = params

    def reads(self) -> list[str]:
        """The state fields this node reads."""
        return list(self.spec.reads if self.spec.reads is not None else self.default_reads)

    def writes(self) -> list[str]:
        """The state fields this node may write: its `writes:` (or the kind's), and the
        kind's `implicit_writes`."""
        listed = self.spec.writes if self.spec.writes is not None else self.kind_writes()
        return list(dict.fromkeys([*listed, *self.implicit_writes]))

    def kind_writes(self) -> list[str]:
        """The fields the kind itself writes with these params, whatever `writes:` says."""
        named = [getattr(self.params, p) for p in self.output_params]
        fields = [*self.default_writes, *named, *self.implicit_writes]
        return list(dict.fromkeys(f for f in fields if isinstance(f, str)))

    def bind(self, graph: Graph) -> None:
        """Called once when the graph is compiled (e.g. to resolve a subgraph's file)."""

    def check(self, graph: Graph) -> list[str]:
        """Kind-specific problems with this node in this graph (messages; empty if fine)."""
        return []

    async def run(self, state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
        """Do the node's work and return a patch of the fields it writes."""
        raise NotImplementedError


class UnknownNodeKind(GraphError):
    """No node kind is registered under a name."""


_REGISTRY: dict[str, type[NodeKind]] = {}
_entry_points_loaded = False

K = TypeVar("K", bound=type[NodeKind])


def register_node(name: str) -> Callable[[K], K]:
    """Class decorator registering a node kind under `name`."""

    def decorate(cls: K) -> K:
        cls.kind_name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _load_entry_points() -> None:
    global _entry_points_loaded
    _entry_points_loaded = True
    # Imported here: importlib.metadata costs ~20 ms, and built-in kinds never need it.
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _REGISTRY:
            loaded = ep.load()
            if isinstance(loaded, type) and issubclass(loaded, NodeKind):
                _REGISTRY[ep.name] = loaded
                loaded.kind_name = loaded.kind_name or ep.name


def node_kind(name: str) -> type[NodeKind]:
    """The node kind registered under `name`; raises UnknownNodeKind listing what exists."""
    if name not in _REGISTRY and not _entry_points_loaded:
        _load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNodeKind(
            f"unknown node kind {name!r}; registered kinds: {', '.join(known_kinds())}"
        ) from None


def known_kinds() -> list[str]:
    """The names of every registered node kind."""
    if not _entry_points_loaded:
        _load_entry_points()
    return sorted(_REGISTRY)
