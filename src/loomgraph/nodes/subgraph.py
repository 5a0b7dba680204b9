"""`subgraph`: run another graph as one node, mapping state in and out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loomgraph.graph.context import NodeContext
from loomgraph.graph.library import load_graph
from loomgraph.graph.registry import NodeKind, register_node
from loomgraph.graph.spec import Graph
from loomgraph.graph.state import final_output


class ChildGraphParams(BaseModel):
    """Parameters of a node that runs another graph."""

    model_config = ConfigDict(extra="forbid")

    graph: str = Field(description="a built-in graph name, or a YAML path relative to this file")


class SubgraphParams(ChildGraphParams):
    """Parameters of a `subgraph` node."""

    inputs: dict[str, str] = Field(
        default_factory=lambda: {"input": "input"},
        description="child field <- parent field")
    outputs: dict[str, str] = Field(
        default_factory=lambda: {"output": "output"},
        description="parent field <- child field (`output` is the child's final answer)")


class ChildGraphNode(NodeKind):
    """Base of the kinds that run another graph: finds and checks the child graph."""

    params: ChildGraphParams

    def _resolve(self, graph: Graph) -> Graph:
        name = self.params.graph
        if graph.source and name.endswith((".yaml", ".yml")):
            candidate = Path(graph.source).parent / name
            if candidate.is_file():
                return load_graph(candidate)
        return load_graph(name)

    def check(self, graph: Graph) -> list[str]:
        """The child graph must exist and be valid."""
        try:
            self._resolve(graph)
        except Exception as err:
            return [f"subgraph {self.params.graph!r}: {err}"]
        return []

    def bind(self, graph: Graph) -> None:
        """Resolve the child graph once."""
        self.child = self._resolve(graph)


@register_node("subgraph")
class SubgraphNode(ChildGraphNode):
    """Run the child graph to its end; its transitions are journaled under this node."""

    Params = SubgraphParams
    params: SubgraphParams

    def reads(self) -> list[str]:
        """Declared reads, or the parent fields the inputs take."""
        if self.spec.reads is not None:
            return list(self.spec.reads)
        return sorted(set(self.params.inputs.values()))

    def writes(self) -> list[str]:
        """Declared writes, or the parent fields the outputs fill, plus usage."""
        if self.spec.writes is not None:
            return list(self.spec.writes)
        return sorted(set(self.params.outputs) | {"usage"})

    async def run(self, state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
        """Map inputs in, run the child, map outputs back, and carry its usage up."""
        p = self.params
        values = {child: state.get(parent) for child, parent in p.inputs.items()}
        if not values.get("messages") and values.get("input"):
            values["messages"] = [{"role": "user", "content": str(values["input"])}]
        final = await ctx.run_subgraph(self.child, values)
        patch = {parent: final_output(final) if child == "output" else final.get(child)
                 for parent, child in p.outputs.items()}
        patch["usage"] = final.get("usage") or {}
        return patch
