"""`map`: run a subgraph once per item of a list, in parallel, and join the results."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.registry import register_node
from loomgraph.graph.spec import Graph
from loomgraph.graph.state import final_output, parse_type
from loomgraph.nodes.concurrency import run_all
from loomgraph.nodes.subgraph import ChildGraphNode, ChildGraphParams
from loomgraph.protocols import RunStatus, RunStopped, Usage

# As the visit limits, a bound every map has unless its graph says otherwise: a model that
# plans 10,000 steps must not start 10,000 agents.
DEFAULT_MAX_ITEMS = 100


class MapParams(ChildGraphParams):
    """Parameters of a `map` node."""

    inputs: dict[str, str] = Field(
        default_factory=dict, description="child field <- parent field, the same for every item"
    )
    over: str = Field(
        description="the list field whose items are mapped; a dotted path "
        "(`plan.steps`) reaches into a field"
    )
    item: str = Field("input", description="the child field each item goes into")
    result: str = Field(
        "output",
        description="the child field taken as the branch's result "
        "(`output` is the child's final answer)",
    )
    output: str = Field(
        description="the field the list of results is written to, through its reducer"
    )
    concurrency: int = Field(4, ge=1, description="branches run at once")
    max_items: int = Field(
        DEFAULT_MAX_ITEMS,
        ge=1,
        description="items mapped at most: a longer list ends the run with `limit_reached` "
        "before any branch runs",
    )


@register_node("map")
class MapNode(ChildGraphNode):
    """Each item runs the child graph as its own journaled branch; results keep item order.

    A finished branch's result is journaled, so after a crash only unfinished branches run
    again.
    """

    Params = MapParams
    params: MapParams
    template_names = frozenset({"item"})
    output_params = ("output",)
    implicit_writes = ("usage",)

    def reads(self) -> list[str]:
        """Declared reads, or the list and the input fields."""
        if self.spec.reads is not None:
            return list(self.spec.reads)
        field = self.params.over.split(".")[0]
        return sorted({field, *self.params.inputs.values()} | self.prompt_reads())

    def check(self, graph: Graph) -> list[str]:
        """The child must exist, and `over` must be a list field."""
        problems = super().check(graph)
        field = None if "." in self.params.over else graph.state.get(self.params.over)
        if field is not None and field.type not in ("any", "Any"):
            try:
                kind = getattr(parse_type(field.type), "__origin__", None)
            except ValueError:
                kind = None
            if kind is not list:
                problems.append(
                    f"map over {self.params.over!r}, which is a {field.type}, not a list"
                )
        elif self.params.over in ("input", "output", "usage"):
            problems.append(f"map over {self.params.over!r}, which is not a list field")
        return problems

    async def run(self, state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
        """Run one branch per item (at most `concurrency` at once) and join their results."""
        p = self.params
        items: Any = state
        for part in p.over.split("."):
            items = items.get(part) if isinstance(items, Mapping) else None
        items = items or []
        if not isinstance(items, list):
            raise TypeError(f"map over {p.over!r}: expected a list, got {type(items).__name__}")
        if len(items) > p.max_items:
            raise RunStopped(
                RunStatus.LIMIT_REACHED,
                f"item limit of map {self.name!r} reached: {len(items)} items in "
                f"{p.over!r}, at most {p.max_items}",
            )
        shared = {child: state.get(parent) for child, parent in p.inputs.items() if child != p.item}

        async def branch(index: int, item: Any) -> dict[str, Any]:
            async def run_branch() -> dict[str, Any]:
                values = self.child_values({**shared, p.item: item}, state, item=item)
                final = await ctx.run_subgraph(self.child, values, branch=str(index))
                value = final_output(final) if p.result == "output" else final.get(p.result)
                return {"result": value, "usage": final.get("usage") or {}}

            return await ctx.effect(f"branch:{index}", {"item": item}, run_branch)

        done = await run_all(
            [functools.partial(branch, i, item) for i, item in enumerate(items)], p.concurrency
        )
        usage = sum((Usage.from_dict(d["usage"]) for d in done), Usage())
        return {p.output: [d["result"] for d in done], "usage": usage.to_dict()}
