"""`function`: call a user function by import path; it returns a patch."""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loomgraph.errors import GraphError, LoomgraphError, StateError
from loomgraph.graph.imports import import_object
from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.registry import NodeKind, register_node
from loomgraph.graph.spec import Graph
from loomgraph.protocols.threads import run_in_thread

_log = logging.getLogger("loomgraph.nodes.function")


class FunctionParams(BaseModel):
    """Parameters of a `function` node."""

    model_config = ConfigDict(extra="forbid")

    call: str = Field(description="import path of the function, `package.module:function`")


class FieldNotRead(LoomgraphError, KeyError):
    """A function node looked up a field that is not in its `reads:` (a KeyError, so code
    that catches KeyError still works)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class StateChangedInPlace(StateError):
    """A function node changed the state it was given instead of returning a patch."""

    def __init__(self, node: str, call: str, fields: list[str]) -> None:
        names = ", ".join(repr(f) for f in fields)
        super().__init__(
            f"node {node!r} ({call}) changed {names} of the state it was given in place; "
            "the change was discarded, as a node changes the state only through the patch it "
            f"returns: return the new value instead (e.g. `return {{{fields[0]!r}: ...}}`, "
            "which goes through the field's reducer)"
        )
        self.node = node
        self.fields = fields


class _ReadFields(dict[str, Any]):
    """What a function gets: a deep copy of the fields it reads, and a lookup of any other
    field that says it is not in the node's `reads:`."""

    __slots__ = ("node",)
    node: str

    def __missing__(self, key: str) -> Any:
        raise FieldNotRead(
            f"node {self.node!r} looked up {key!r}, which is not in its `reads:`, so its "
            f"function was not given it (it was given {', '.join(map(repr, self)) or 'none'});"
            f" add {key!r} to the node's `reads:`"
        )


def import_callable(path: str, near: str | None = None) -> Callable[..., Any]:
    """The callable at `package.module:attr` (or `package.module.attr`), looked for next to
    the graph file `near` and in the current directory first."""
    target = import_object(path, near=near, what="function")
    if not callable(target):
        raise ImportError(f"{path!r} is not callable")
    return target  # type: ignore[no-any-return]


def argument_count(path: str, fn: Callable[..., Any]) -> int:
    """How many arguments `fn` is called with: 2 (`state, ctx`) when it has two or more
    parameters and takes two, else 1 (`state`). GraphError when it takes neither, or when
    Python cannot tell, as for many built-in functions."""
    try:
        signature = inspect.signature(fn)
    except (ValueError, TypeError) as err:
        raise GraphError(
            f"{path!r}: cannot read its parameters ({err}), so it cannot be called with "
            "(state) or (state, ctx); call it from a Python function of your own"
        ) from None
    for count in (2, 1) if len(signature.parameters) >= 2 else (1, 2):
        try:
            signature.bind(*range(count))
        except TypeError:
            continue
        return count
    raise GraphError(
        f"function {path!r} takes {_bare(signature)}, but a function node calls it as "
        "f(state) or f(state, ctx); give it one of those signatures"
    )


def _differ(copied: Any, original: Any) -> bool:
    """Whether the function's copy of a field no longer equals the field (a float a deep copy
    keeps as the same object, NaN included, is the same)."""
    return copied is not original and bool(copied != original)


def _bare(signature: inspect.Signature) -> inspect.Signature:
    """The signature without annotations, as a user reads it: `(state, ctx, extra)`."""
    empty = inspect.Parameter.empty
    return signature.replace(
        parameters=[p.replace(annotation=empty) for p in signature.parameters.values()],
        return_annotation=inspect.Signature.empty,
    )


@register_node("function")
class FunctionNode(NodeKind):
    """Call `fn(state)` or `fn(state, ctx)`, sync or async; its dict return value is the patch.

    An `async def` function runs on the event loop; a sync one in a worker thread (the one
    sync tools run in), so it blocks neither the loop nor other runs, and the visit's
    `timeout` ends the visit (not the thread, which cannot be stopped).

    The function gets a deep copy of the fields it reads: a change it makes to them in place
    is found after the call and fails the node (`StateChangedInPlace`), since it would
    otherwise reach the run's state without being journaled.
    """

    Params = FunctionParams
    params: FunctionParams

    def check(self, graph: Graph) -> list[str]:
        """The function must import, and take (state) or (state, ctx)."""
        try:
            argument_count(self.params.call, import_callable(self.params.call, graph.source))
        except (ImportError, GraphError) as err:
            return [str(err)]
        return []

    def bind(self, graph: Graph) -> None:
        """Import the function once."""
        self.fn = import_callable(self.params.call, graph.source)
        self.wants_ctx = argument_count(self.params.call, self.fn) == 2
        self.is_async = inspect.iscoroutinefunction(self.fn)

    async def run(self, state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
        """Call the function with a copy of the fields it reads."""
        given = _ReadFields(copy.deepcopy(dict(state)))
        given.node = self.name
        args = (given, ctx) if self.wants_ctx else (given,)
        result = await self.fn(*args) if self.is_async else await self._in_thread(args)
        returned = result.keys() if isinstance(result, Mapping) else ()
        changed = [
            name
            for name in dict.fromkeys([*state, *given])
            if name not in returned
            and (name not in state or name not in given or _differ(given[name], state[name]))
        ]
        if changed:
            raise StateChangedInPlace(self.name, self.params.call, changed)
        return result if result is not None else {}

    async def _in_thread(self, args: tuple[Any, ...]) -> Any:
        """Call the sync function in a worker thread, in a copy of the run's context; await
        what it returns if that is awaitable (a sync callable wrapping an async function)."""
        try:
            result = await run_in_thread(self.fn, *args)
        except asyncio.CancelledError:
            # A thread cannot be stopped: the visit ends (its timeout, the run's
            # cancellation) and the function runs on until it returns, unheard.
            _log.warning(
                "node %r (%s) was cancelled: its function's thread cannot be stopped and "
                "runs on in the background until the function returns",
                self.name,
                self.params.call,
            )
            raise
        if inspect.isawaitable(result):  # judged call by call: the node is shared by runs
            result = await result
        return result
