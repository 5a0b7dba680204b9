"""Node kinds: the base class and the registry by name (plus the `loomgraph.nodes` entry points)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

from loomgraph.errors import GraphError
from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.spec import Graph, NodeSpec

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

ENTRY_POINT_GROUP = "loomgraph.nodes"
# An entry point's value: `module:attr`, either part dotted, optional `[extras]`.
_IMPORT_PATH = re.compile(r"\s*[\w.]+\s*(:\s*[\w.]+\s*)?(\[[^\]]*\])?\s*")


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


class NodeKindLoadError(GraphError):
    """An installed distribution's `loomgraph.nodes` entry point for a kind cannot be loaded
    (its module fails to import, its value is malformed, or it names no NodeKind)."""


# The kinds loomgraph ships (`loomgraph.nodes`): registered before any other is looked up,
# and replaced only by `register_node(name, replace=True)`, whatever the import order.
BUILTIN_KINDS = frozenset({"function", "interrupt", "llm", "map", "model", "subgraph", "tools"})
_BUILTIN_PACKAGE = "loomgraph.nodes"

_REGISTRY: dict[str, type[NodeKind]] = {}
# Names registered with replace=True, which a later import of the built-ins leaves alone.
_replaced: set[str] = set()

K = TypeVar("K", bound=type[NodeKind])


def register_node(name: str, *, replace: bool = False) -> Callable[[K], K]:
    """Class decorator registering a node kind under `name`.

    The class is checked here, so a mistake fails at import, naming the class: it must be a
    `NodeKind` subclass whose `run` is `async def`, its `Params` a pydantic model, and its
    `templates` and `output_params` names of those params. A name already taken (a built-in
    kind, or a kind other code registered) is refused unless `replace=True`. A `Params` model
    that does not say what to do with unknown keys is made to refuse them (see `_strict`).
    """
    if not isinstance(name, str) or not name:
        raise TypeError(
            f'register_node takes the kind\'s name, as in @register_node("shout"), not {name!r}'
        )

    def decorate(cls: K) -> K:
        if (problem := _kind_problem(cls)) is not None:
            raise TypeError(f"node kind {name!r}: {problem}")
        if _is_builtin(cls):
            if name in _replaced:
                return cls  # replaced on purpose before the built-ins were imported
        else:
            _refuse_taken(cls, name, replace)
        cls.Params = _strict(cls.Params)
        cls.kind_name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _refuse_taken(cls: type, name: str, replace: bool) -> None:
    """ValueError if `name` is a built-in kind or another class's, unless `replace`."""
    if replace:
        _replaced.add(name)  # a built-in imported later leaves it alone (`register_node`)
        return
    old = _REGISTRY.get(name)
    if name in BUILTIN_KINDS:  # whether or not the built-ins are imported yet
        taken = "the name of a built-in kind"
    elif old is not None and not _same_class(old, cls):
        taken = f"already registered by {_where(old)}"
    else:
        return
    raise ValueError(
        f"cannot register {_where(cls)} as node kind {name!r}: {name!r} is {taken}; choose "
        "another name, or pass replace=True (@register_node(name, replace=True)) to replace it"
    )


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_builtin(cls: type) -> bool:
    return cls.__module__.startswith(_BUILTIN_PACKAGE + ".")


def _same_class(a: type, b: type) -> bool:
    # A module run again (a reload) defines the same class anew: that is no conflict.
    return a is b or _where(a) == _where(b)


def _kind_problem(cls: object) -> str | None:
    """What keeps `cls` from working as a node kind, naming it (None: nothing)."""
    if not isinstance(cls, type) or not issubclass(cls, NodeKind):
        shown = _where(cls) if isinstance(cls, type) else repr(cls)
        return (
            f"{shown} is not a NodeKind subclass; "
            "write `class MyKind(NodeKind):` (from loomgraph import NodeKind)"
        )
    where = _where(cls)
    if not inspect.iscoroutinefunction(cls.run):
        return (
            f"{where}.run must be `async def run(self, state, ctx)`; the interpreter awaits "
            "it. For blocking work, `await asyncio.to_thread(...)` inside it, or use a "
            "`function` node (which takes sync functions)"
        )
    params = cls.Params
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        return f"{where}.Params must be a pydantic BaseModel subclass, not {params!r}"
    fields = params.model_fields
    accepted = set(fields) | {f.alias for f in fields.values() if f.alias}
    for attr in ("templates", "output_params"):
        names = getattr(cls, attr)
        if isinstance(names, str) or not isinstance(names, tuple | list | frozenset | set):
            return f"{where}.{attr} must be a tuple of param names, as in ({names!r},)"
        unknown = [n for n in names if n not in accepted]
        if unknown:
            return (
                f"{where}.{attr} names {', '.join(map(repr, unknown))}, which "
                f"{params.__name__} does not have (its params: "
                f"{', '.join(sorted(accepted)) or 'none'}); fix the name or add the param"
            )
    return None


def _strict(params: type[BaseModel]) -> type[BaseModel]:
    """`params`, refusing unknown keys: a subclass with `extra="forbid"` when the model does
    not set `extra` itself, so `tims: 3` for `times` is a `bad-params` problem, not ignored.
    A model that sets `extra` (even to "ignore" or "allow") is taken as its author wrote it."""
    if "extra" in params.model_config:
        return params
    strict: type[BaseModel] = type(
        params.__name__,
        (params,),
        {
            "model_config": ConfigDict(extra="forbid"),
            "__module__": params.__module__,
            "__qualname__": params.__qualname__,
            "__doc__": params.__doc__,
        },
    )
    return strict


def _entry_points_named(name: str | None = None) -> list[EntryPoint]:
    # Imported here: importlib.metadata costs ~20 ms, and built-in kinds never need it.
    from importlib.metadata import entry_points

    found = (
        entry_points(group=ENTRY_POINT_GROUP, name=name)
        if name
        else entry_points(group=ENTRY_POINT_GROUP)
    )
    return list(found)


def _from_distribution(ep: EntryPoint) -> str:
    dist = ep.dist
    shown = f"{ep.name} = {ep.value}"
    if dist is None:
        return f"entry point `{shown}`"
    return f"entry point `{shown}` of the installed distribution {dist.name} {dist.version}"


def _load_entry_point(name: str) -> type[NodeKind] | None:
    """The kind the `loomgraph.nodes` entry point called `name` names (only that one is
    loaded); None if no installed distribution declares it; NodeKindLoadError if it fails."""
    declared = {ep.value: ep for ep in _entry_points_named(name)}
    if not declared:
        return None
    if len(declared) > 1:
        listed = "; ".join(_from_distribution(ep) for ep in declared.values())
        raise NodeKindLoadError(
            f"node kind {name!r} is declared by more than one installed distribution ({listed}); "
            "uninstall all but one"
        )
    (ep,) = declared.values()
    where = _from_distribution(ep)
    fix = "fix or reinstall that distribution, or uninstall it"
    if not _IMPORT_PATH.fullmatch(ep.value):
        raise NodeKindLoadError(
            f"node kind {name!r}: {where} is not an import path like `package.module:Class`; {fix}"
        )
    try:
        loaded = ep.load()
    except (Exception, SystemExit) as err:  # third-party code: anything may fail in it
        said = " ".join(str(err).split())
        raise NodeKindLoadError(
            f"node kind {name!r} cannot be loaded from {where}: {type(err).__name__}: {said}; {fix}"
        ) from err
    if (problem := _kind_problem(loaded)) is not None:
        raise NodeKindLoadError(f"node kind {name!r} from {where}: {problem}; {fix}")
    kind: type[NodeKind] = loaded
    kind.Params = _strict(kind.Params)
    kind.kind_name = kind.kind_name or name
    _REGISTRY[name] = kind
    return kind


def _load_builtin(name: str) -> type[NodeKind] | None:
    """The built-in kind `name` (its module registers it when imported); None for another."""
    if name not in BUILTIN_KINDS:
        return None
    import_module(f"{_BUILTIN_PACKAGE}.{name}")
    return _REGISTRY.get(name)


def node_kind(name: str) -> type[NodeKind]:
    """The node kind registered under `name`: a built-in, one registered in this process, or
    one an installed distribution declares (loaded now). UnknownNodeKind lists what exists;
    NodeKindLoadError says which distribution's entry point failed."""
    # The graph layer finds kinds by name, it never imports the nodes layer: a built-in is
    # the module loomgraph's own entry point names (`loomgraph.nodes.<name>`), imported on
    # first use without reading the installed distributions' metadata.
    found = _REGISTRY.get(name) or _load_builtin(name) or _load_entry_point(name)
    if found is None:
        raise UnknownNodeKind(
            f"unknown node kind {name!r}; registered kinds: {', '.join(known_kinds())}"
        )
    return found


def known_kinds() -> list[str]:
    """The names of every kind: built-in, registered, or declared by an installed
    distribution (listed without importing it)."""
    return sorted(set(_REGISTRY) | {ep.name for ep in _entry_points_named()})
