"""`model`: one model turn over the conversation, with the agent's tools on offer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.registry import NodeKind, register_node
from loomgraph.protocols import ModelRequest


class ModelParams(BaseModel):
    """Parameters of a `model` node."""

    model_config = ConfigDict(extra="forbid")

    tools: bool = True
    max_tokens: int | None = None


@register_node("model")
class ModelNode(NodeKind):
    """Ask the model for its next turn and append it to the conversation."""

    Params = ModelParams
    params: ModelParams
    default_reads = ("messages",)
    default_writes = ("messages",)
    implicit_writes = ("usage",)

    async def run(self, state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
        """Append the model's turn (text and tool calls) and count its usage; a refused or
        truncated turn fails the node."""
        params = self.params
        request = ModelRequest(
            messages=list(state["messages"]),
            system=ctx.system,  # a copy: the state grows
            tools=ctx.deps.tools.specs() if params.tools else (),
            max_tokens=params.max_tokens,
        )
        # A refusal, or a text cut off by max_tokens, is no turn to go on from: the node fails
        # (`ModelRefused`, `ModelAnswerTruncated`) rather than hand it on as an answer.
        response = (await ctx.call_model(request)).whole_answer(request, ctx.deps.model)
        return {"messages": [response.to_message()], "usage": response.usage.to_dict()}
