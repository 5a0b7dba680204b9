"""A node of a user's own that catches the stop of an approval request and goes on leaves the
run free to ask again: a later call that asks journals its request and the run stops at it.

Found reading session 44's note: the flag that makes a parallel branch's request wait while
another stop is under way (`RunScope.asking`) was set by the first request and never
cleared, so the second call stopped the run without journaling a request (nothing shown,
no deadline), as if a sibling's stop were still under way. A top-level visit that ends in a
transition ends every stop begun inside it: the flag is cleared there.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from loomgraph import Agent, tool
from loomgraph.governance import StandardPermissions
from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.spec import EdgeSpec, Graph, NodeSpec
from loomgraph.models import ScriptedModel
from loomgraph.protocols import RunStatus, RunStopped, ToolCall

PAID: list[str] = []


@tool
def pay(to: str) -> str:
    """Pay someone."""
    PAID.append(to)
    return f"paid {to}"


async def try_ann(state: Any, ctx: NodeContext) -> dict[str, Any]:
    """Pays ann if no one has to approve it; goes on without her otherwise."""
    with contextlib.suppress(RunStopped):
        await ctx.call_tool(ToolCall(id="A", tool="pay", args={"to": "ann"}))
    return {}


async def pay_bob(state: Any, ctx: NodeContext) -> dict[str, Any]:
    await ctx.call_tool(ToolCall(id="B", tool="pay", args={"to": "bob"}))
    return {}


GRAPH = Graph(
    name="caught-stop",
    entry="try_ann",
    nodes={
        "try_ann": NodeSpec(kind="function", call=f"{__name__}:try_ann"),
        "pay_bob": NodeSpec(kind="function", call=f"{__name__}:pay_bob"),
    },
    edges=[
        EdgeSpec(source="try_ann", target="pay_bob"),
        EdgeSpec(source="pay_bob", target="END"),
    ],
)


async def test_a_request_after_a_caught_stop_is_journaled_and_shown(tmp_path: Path) -> None:
    PAID.clear()
    async with Agent(
        "x",
        model=ScriptedModel([]),
        architecture=GRAPH,
        tools=[pay],
        permissions=StandardPermissions(ask=["pay"]),
        runtime=f"sqlite:{tmp_path / 'journal.db'}",
    ) as agent:
        stopped = await agent.run("pay")
        assert stopped.status == RunStatus.AWAITING_APPROVAL, stopped.reason
        assert stopped.pending is not None and stopped.pending.call is not None
        assert stopped.pending.call["args"] == {"to": "bob"}
        done = await agent.resume(stopped.run_id, approve=True)
        assert done.status == RunStatus.COMPLETED, done.reason
    assert PAID == ["bob"]
