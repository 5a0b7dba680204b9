"""A fork starts where its checkpoint left off, resumed or not; and what a fork's patch puts
into the state is checked like any outside input, the built-in fields included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent, tool
from loomgraph.errors import StateError
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.runtime import SqliteRuntime

paid: list[tuple[str, int]] = []


@tool(destructive=True)
def pay(to: str, amount: int) -> str:
    """Pay someone."""
    paid.append((to, amount))
    return f"paid {amount} to {to}"


def pay_call(to: str, amount: int) -> dict[str, Any]:
    return {"tool_calls": [{"id": "X", "tool": "pay", "args": {"to": to, "amount": amount}}]}


def make(tmp_path: Path, *turns: Any) -> Agent:
    paid.clear()
    return Agent(
        "x",
        model=ScriptedModel(list(turns)),
        tools=[pay],
        runtime=SqliteRuntime(str(tmp_path / "journal.db")),
        permissions=StandardPermissions(ask=["pay"]),
    )


async def test_a_fork_waiting_in_its_first_node_resumes_there(tmp_path: Path) -> None:
    agent = make(tmp_path, pay_call("bob", 7), pay_call("mallory", 100_000), "done", "done")
    parent = await agent.run("go")
    assert parent.status == "awaiting_approval"
    fork = await agent.fork(parent.run_id, at=1)  # checkpoint 1: the next node is `tools`
    assert fork.status == "awaiting_approval" and fork.pending is not None
    assert fork.pending.call is not None and fork.pending.call["args"]["to"] == "bob"

    after = await agent.resume(fork.run_id, approve=True)

    assert paid == [("bob", 7)]  # the approved call ran, from the forked node
    transitions = await agent.deps.runtime.transitions(fork.run_id)
    assert [(t.node, t.visit) for t in transitions] == [("tools", 1), ("model", 2)]
    # The model's next call, with the same id, is asked about anew: bob's approval is spent.
    assert after.status == "awaiting_approval" and after.pending is not None
    assert after.pending.call is not None and after.pending.call["args"]["to"] == "mallory"
    await agent.aclose()


async def test_a_resumed_fork_counts_visits_on_from_its_checkpoint(tmp_path: Path) -> None:
    agent = make(tmp_path, pay_call("bob", 7), "done", "done")
    parent = await agent.run("go")
    fork = await agent.fork(parent.run_id, at=1)
    await agent.resume(fork.run_id, approve=True)
    visits = [(t.node, t.visit) for t in await agent.deps.runtime.transitions(fork.run_id)]
    # The parent's model visit 1 counts: the fork's next model visit is its second.
    assert visits == [("tools", 1), ("model", 2)]
    await agent.aclose()


BAD_PATCHES = [
    ({"messages": "not a list"}, "messages"),
    ({"messages": [1, 2]}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
    ({"usage": "x"}, "usage"),
    ({"usage": {"input_tokens": -1_000_000_000}}, "usage"),
    ({"usage": {"cost_usd": -1e9}}, "usage"),
    ({"usage": {"made_up": 1}}, "usage"),
    ({"input": 5}, "input"),
    ({"error": "boom"}, "error"),
]


@pytest.mark.parametrize(("patch", "field"), BAD_PATCHES, ids=[str(p) for p, _ in BAD_PATCHES])
async def test_a_fork_patch_of_the_wrong_shape_is_refused_and_nothing_stored(
    tmp_path: Path, patch: dict[str, Any], field: str
) -> None:
    agent = make(tmp_path, "hello")
    parent = await agent.run("go")
    before = await agent.deps.runtime.runs()
    with pytest.raises(StateError, match=f"state field {field!r}"):
        await agent.fork(parent.run_id, at=1, patch=patch)
    assert await agent.deps.runtime.runs() == before
    await agent.aclose()


async def test_a_fork_patch_of_the_right_shape_is_taken(tmp_path: Path) -> None:
    agent = make(tmp_path, "hello", "again")
    parent = await agent.run("go")
    message = {"role": "user", "content": "and now?"}
    fork = await agent.fork(
        parent.run_id, at=0, patch={"messages": [message], "usage": {"input_tokens": 3}}
    )
    assert fork.status == "completed"
    await agent.aclose()
