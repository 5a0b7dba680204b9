"""`tools`: run the tool calls of the last assistant message, concurrently, results in order."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.registry import NodeKind, register_node
from loomgraph.nodes.concurrency import run_all
from loomgraph.protocols import Message, ToolCall, ToolResult


class ToolsParams(BaseModel):
    """Parameters of a `tools` node."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(8, ge=1, description="tool calls of one turn run at once")


@register_node("tools")
class ToolsNode(NodeKind):
    """Execute every tool call of the last assistant message and append one result each."""

    Params = ToolsParams
    params: ToolsParams
    default_reads = ("messages",)
    default_writes = ("messages",)

    async def run(self, state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
        """Run the calls (at most `concurrency` at once) and append their results in order."""
        messages = state["messages"]
        last = messages[-1] if messages else {}
        calls: list[ToolCall] = (
            last.get("tool_calls") or [] if last.get("role") == "assistant" else []
        )
        if not calls:
            return {}
        jobs = [functools.partial(ctx.call_tool, call) for call in calls]
        # A call that stops the run (an approval, the budget) lets the calls already under
        # way finish and be journaled: cancelling them would leave their effects unknown.
        results = await run_all(jobs, self.params.concurrency, cancel_on_error=False)
        return {"messages": [_tool_message(c, r) for c, r in zip(calls, results, strict=True)]}


def _tool_message(call: ToolCall, result: ToolResult) -> Message:
    message: Message = {
        "role": "tool",
        "tool_call_id": call["id"],
        "name": call["tool"],
        "content": result.get("content", ""),
        "is_error": result.get("is_error", False),
    }
    if result.get("images"):
        message["images"] = result["images"]
    return message
