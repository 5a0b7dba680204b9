"""What a user's node (a `function` node, or a node kind of the user's own) is given: a deep
copy of the fields it reads, which names the node's `reads:` when the node looks up another
field. After the node ran, its copy is compared with the state: a change made in place fails
the node (`StateChangedInPlace`), since it would otherwise reach the run's state without
being journaled, and the live run would go on from a state its journal does not hold (a
resume or a fork from there would not). The framework's own kinds are not copied: they
change the state only through their patches."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from loomgraph.errors import LoomgraphError, StateError
from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.registry import NodeKind


class FieldNotRead(LoomgraphError, KeyError):
    """A user's node looked up a field that is not in its `reads:` (a KeyError, so code that
    catches KeyError still works)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class StateChangedInPlace(StateError):
    """A user's node changed the state it was given instead of returning a patch."""

    def __init__(self, node: str, what: str, fields: list[str]) -> None:
        names = ", ".join(repr(f) for f in fields)
        super().__init__(
            f"node {node!r} ({what}) changed {names} of the state it was given in place; "
            "the change was discarded, as a node changes the state only through the patch it "
            f"returns: return the new value instead (e.g. `return {{{fields[0]!r}: ...}}`, "
            "which goes through the field's reducer)"
        )
        self.node = node
        self.fields = fields


class ReadFields(dict[str, Any]):
    """A copy of the fields a node reads, whose lookup of any other field says it is not in
    the node's `reads:`."""

    __slots__ = ("node",)
    node: str

    def __missing__(self, key: str) -> Any:
        raise FieldNotRead(
            f"node {self.node!r} looked up {key!r}, which is not in its `reads:`, so it was "
            f"not given it (it was given {', '.join(map(repr, self)) or 'none'}); add "
            f"{key!r} to the node's `reads:`"
        )


async def run_users_node(kind: NodeKind, view: Mapping[str, Any], ctx: NodeContext) -> Any:
    """`kind.run` on a copy of `view`; `StateChangedInPlace` when the node changed its copy
    of a field it did not return in its patch (a value changed and returned is fine)."""
    given = ReadFields(copy.deepcopy(dict(view)))
    given.node = kind.name
    result = await kind.run(given, ctx)
    returned = result.keys() if isinstance(result, Mapping) else ()
    changed = [
        name
        for name in dict.fromkeys([*view, *given])
        if name not in returned
        and (name not in view or name not in given or _differ(given[name], view[name]))
    ]
    if changed:
        raise StateChangedInPlace(kind.name, _described(kind), changed)
    return result


def _described(kind: NodeKind) -> str:
    """The node's kind, and a `function` node's function: what to look at."""
    call = getattr(kind.params, "call", None)
    return str(call) if kind.spec.kind == "function" and call else f"kind {kind.spec.kind!r}"


def _differ(copied: Any, original: Any) -> bool:
    """Whether the node's copy of a field no longer equals the field (a float a deep copy
    keeps as the same object, NaN included, is the same)."""
    return copied is not original and bool(copied != original)
