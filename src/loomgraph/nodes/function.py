"""`function`: call a user function by import path; it returns a patch."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loomgraph.errors import GraphError
from loomgraph.graph.imports import import_object
from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.registry import NodeKind, register_node
from loomgraph.graph.spec import Graph


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


def parameter_count(path: str, fn: Callable[..., Any]) -> int:
    """How many parameters `fn` takes (it gets `state`, or `state, ctx` when it takes two);
    GraphError when Python cannot tell, as for many built-in functions."""
    try:
        return len(inspect.signature(fn).parameters)
    except (ValueError, TypeError) as err:
        raise GraphError(
            f"{path!r}: cannot read its parameters ({err}), so it cannot be called with "
            "(state) or (state, ctx); call it from a Python function of your own"
        ) from None


@register_node("function")
class FunctionNode(NodeKind):
    """Call `fn(state)` or `fn(state, ctx)`, sync or async; its dict return value is the patch."""

    Params = FunctionParams
    params: FunctionParams

    def check(self, graph: Graph) -> list[str]:
        """The function must import, and show its parameters."""
        try:
            parameter_count(self.params.call, import_callable(self.params.call, graph.source))
        except (ImportError, GraphError) as err:
            return [str(err)]
        return []

    def bind(self, graph: Graph) -> None:
        """Import the function once."""
        self.fn = import_callable(self.params.call, graph.source)
        self.wants_ctx = parameter_count(self.params.call, self.fn) >= 2
        self.is_async = inspect.iscoroutinefunction(self.fn)

    async def run(self, state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
        """Call the function with the fields it reads."""
        args = (state, ctx) if self.wants_ctx else (state,)
        result = await self.fn(*args) if self.is_async else self.fn(*args)
        return result if result is not None else {}
