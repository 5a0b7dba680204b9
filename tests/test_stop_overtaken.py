"""A stop overtaken by a sibling's failure leaves no request to wait its turn behind.

Found by probing: in a parallel map, one branch journaled a request for approval (the run
would stop there) while its sibling failed; the failure won, the map's `on_error` (or its
`retry`) carried the run on, and the next call that asked deferred to the request that no
longer stopped anything: the run ended `awaiting_approval` with no pending request, and
`resume(approve=True)` was refused. A stop under way ends with the failure that overtook it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent, tool
from loomgraph.governance import Hooks, StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest, RunStatus
from loomgraph.protocols.events import PERMISSION_DECISION

PAID: list[str] = []
ASKED: dict[str, asyncio.Event] = {}

CHILD = """
schema_version: 1
name: overtaken-child
version: "1"
entry: gate
nodes:
  gate: {kind: function, call: 'test_stop_overtaken:gate', reads: [input], writes: []}
  model: {kind: model, reads: [messages], writes: [messages, usage], tools: true}
  tools: {kind: tools, reads: [messages], writes: [messages]}
edges:
  - {from: gate, to: model}
  - {from: model, to: tools, when: "last_message.tool_calls | length > 0"}
  - {from: model, to: END}
  - {from: tools, to: model}
"""

PARENT = """
schema_version: 1
name: overtaken
version: "1"
entry: prep
state:
  items: {type: 'list[str]'}
  results: {type: 'list[str]', reducer: append, default: []}
nodes:
  prep: {kind: function, call: 'test_stop_overtaken:prep', reads: [input], writes: [items]}
  each: {kind: map, graph: child.yaml, over: items, output: results, concurrency: 2, POLICY}
  model: {kind: model, reads: [messages], writes: [messages, usage], tools: true}
  tools: {kind: tools, reads: [messages], writes: [messages]}
edges:
  - {from: prep, to: each}
  - {from: each, to: model}
  - {from: model, to: tools, when: "last_message.tool_calls | length > 0"}
  - {from: model, to: END}
  - {from: tools, to: model}
"""


def prep(state: dict[str, Any]) -> dict[str, Any]:
    return {"items": ["pay ann", "boom"]}


async def gate(state: dict[str, Any]) -> dict[str, Any]:
    """The `boom` branch fails once its sibling's request is journaled (the first time)."""
    if "boom" in state["input"] and not ASKED["once"].is_set():
        await asyncio.wait_for(ASKED["asked"].wait(), 30)
        ASKED["once"].set()
        raise RuntimeError("boom")
    return {}


@tool
def pay(to: str) -> str:
    """Pay someone."""
    PAID.append(to)
    return f"paid {to}"


def turn(request: ModelRequest) -> Any:
    said = " ".join(str(m.get("content")) for m in request.messages)
    if any(m.get("role") == "tool" for m in request.messages):
        return "done"
    who = "ann" if "pay ann" in said else "zed"
    return {"tool_calls": [{"id": f"c-{who}", "tool": "pay", "args": {"to": who}}]}


@pytest.mark.parametrize("policy", ["on_error: model", "retry: {attempts: 2}"])
async def test_a_request_overtaken_by_a_failure_lets_the_next_ask_stop_the_run(
    tmp_path: Path, policy: str
) -> None:
    PAID.clear()
    ASKED.clear()
    ASKED.update(asked=asyncio.Event(), once=asyncio.Event())
    (tmp_path / "child.yaml").write_text(CHILD)
    (tmp_path / "graph.yaml").write_text(PARENT.replace("POLICY", policy))
    hooks = Hooks()

    @hooks.on_event
    def heard(event: Any) -> None:
        if event.kind == PERMISSION_DECISION and event.payload["verdict"] == "ask":
            ASKED["asked"].set()

    agent = Agent(
        "x",
        model=ScriptedModel(turn),
        tools=[pay],
        architecture=str(tmp_path / "graph.yaml"),
        permissions=StandardPermissions(ask=["pay"]),
        hooks=hooks,
        runtime=f"sqlite:{tmp_path / 'journal.db'}",
    )
    async with agent:
        result = await agent.run("go", user_id="alice")
        stops = 0
        while result.status == RunStatus.AWAITING_APPROVAL:
            stops += 1
            assert stops <= 3, result
            assert result.pending is not None and result.pending.call is not None, result.reason
            result = await agent.resume(result.run_id, approve=True)
        assert result.status == RunStatus.COMPLETED, result.reason
    assert stops >= 1 and PAID
