"""`function`: call a user function by import path; it returns a patch."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loomgraph.engine.users_view import FieldNotRead as FieldNotRead
from loomgraph.engine.users_view import StateChangedInPlace as StateChangedInPlace
from loomgraph.errors import GraphError
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

    As every user's node, the function gets a deep copy of the fields it reads: a change it
    makes to them in place fails the node (`engine.users_view.StateChangedInPlace`).
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
        """Call the function (with the copy of the fields it reads the engine gives it)."""
        args = (state, ctx) if self.wants_ctx else (state,)
        result = await self.fn(*args) if self.is_async else await self._in_thread(args)
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
