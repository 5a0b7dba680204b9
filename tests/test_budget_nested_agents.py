"""A child Agent sharing its parent's budget does not wait for the parent's own holds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from loomgraph import Agent, tool
from loomgraph.engine.scope import active_scope
from loomgraph.governance import BudgetConfig, Caps, StandardBudget
from loomgraph.models import ScriptedModel
from loomgraph.protocols import BudgetExceeded, BudgetScope, Reservation, Usage

BOUND_S = 60.0  # a generous bound on waits for events: only a run that hangs reaches it

# ------------------------------------------------------------ 2. budget hold waits


async def test_a_child_agent_does_not_wait_for_its_parents_hold() -> None:
    """A tool of a parent run calls a child Agent sharing the parent's budget (one
    `per_user=Caps(tool_calls=1)`). The child's tool call cannot fit while the parent's tool
    call holds the cap, and that hold ends only after the child returns. The user sees the
    child wait the whole `hold_wait_s` (30 s by default) before it is refused, the refusal
    saying `held by 2 other reservations; waited 2 s` (one holds a tool call; the other is a
    node visit holding nothing). They should see the refusal at once, as for the run's own
    holds: a hold of a run the waiter was started from can only end after the waiter ends."""
    model = "claude-sonnet-4-5"
    budget = StandardBudget(BudgetConfig(model=model, per_user=Caps(tool_calls=1), hold_wait_s=2))

    @tool
    def leaf() -> str:
        """A leaf tool."""
        return "leaf"

    child_turns: list[Any] = [{"tool_calls": [{"tool": "leaf", "args": {}}]}, "ok"]
    child = Agent("c", model=ScriptedModel(child_turns, name=model), tools=[leaf], budget=budget)

    @tool
    async def ask_child() -> str:
        """Ask the child agent."""
        done = await child.run("go", user_id="alice")
        return f"{done.status} {done.reason}"

    turns: list[Any] = [{"tool_calls": [{"tool": "ask_child", "args": {}}]}, "done"]
    parent = Agent("p", model=ScriptedModel(turns, name=model), tools=[ask_child], budget=budget)
    events = [e async for e in parent.stream("x", user_id="alice")]
    (answer,) = [e.payload["result"]["content"] for e in events if e.kind == "tool_result"]
    assert "budget_exhausted" in answer  # refused: the parent's call holds the only one
    assert "waited" not in answer, f"the child waited for its parent: {answer}"


async def test_a_grandchild_agent_does_not_wait_for_any_run_it_was_started_from() -> None:
    """Three Agents nested through tools, one budget `per_user=Caps(tool_calls=2)`: the
    outer run's tool call and the middle run's hold both calls while the innermost run's
    tool call is decided. Both holds end only after it returns: refused at once, and the
    outer run, which it was started from through the middle one, counts as its own too."""
    model = "claude-sonnet-4-5"
    budget = StandardBudget(BudgetConfig(model=model, per_user=Caps(tool_calls=2), hold_wait_s=2))

    @tool
    def leaf() -> str:
        """A leaf tool."""
        return "leaf"

    inner_turns: list[Any] = [{"tool_calls": [{"tool": "leaf", "args": {}}]}, "ok"]
    inner = Agent("i", model=ScriptedModel(inner_turns, name=model), tools=[leaf], budget=budget)

    @tool
    async def ask_inner() -> str:
        """Ask the inner agent."""
        done = await inner.run("go", user_id="alice")
        return f"{done.status} {done.reason}"

    middle_turns: list[Any] = [{"tool_calls": [{"tool": "ask_inner", "args": {}}]}, "ok"]
    middle = Agent(
        "m", model=ScriptedModel(middle_turns, name=model), tools=[ask_inner], budget=budget
    )

    @tool
    async def ask_middle() -> str:
        """Ask the middle agent."""
        events = [e async for e in middle.stream("go", user_id="alice")]
        (inner_answer,) = [
            e.payload["result"]["content"] for e in events if e.kind == "tool_result"
        ]
        return str(inner_answer)

    turns: list[Any] = [{"tool_calls": [{"tool": "ask_middle", "args": {}}]}, "done"]
    outer = Agent("o", model=ScriptedModel(turns, name=model), tools=[ask_middle], budget=budget)
    events = [e async for e in outer.stream("x", user_id="alice")]
    (answer,) = [e.payload["result"]["content"] for e in events if e.kind == "tool_result"]
    assert "budget_exhausted" in answer and "user:alice:tool_calls" in answer
    assert "waited" not in answer, f"the innermost run waited for an outer one: {answer}"


ALICE_A = BudgetScope("run-a", "alice")


async def test_only_the_runs_a_run_was_started_from_count_as_its_own() -> None:
    """Run A holds the only tool call. A run started from A is refused at once; a run
    started from another run (A's sibling) still waits for A's hold, and when the wait runs
    out it names the one hold of a tool call it waited for, not A's node visit, which holds
    no tool call."""
    budget = StandardBudget(BudgetConfig(per_user=Caps(tool_calls=1), hold_wait_s=0.2))
    await budget.reserve(Reservation(ALICE_A, "node", Usage()))  # a node visit
    held = await budget.reserve(Reservation(ALICE_A, "tool", Usage(tool_calls=1)))
    child = BudgetScope("run-b", "alice", ("run-a",))
    refusal = asyncio.ensure_future(budget.reserve(Reservation(child, "tool", Usage(tool_calls=1))))
    await asyncio.sleep(0)  # one turn of the loop: an in-memory refusal is decided by then
    assert refusal.done()
    with pytest.raises(BudgetExceeded, match="user:alice:tool_calls") as info:
        refusal.result()
    assert "waited" not in info.value.detail

    sibling = BudgetScope("run-c", "alice", ("run-x",))
    with pytest.raises(BudgetExceeded, match="user:alice:tool_calls") as info:
        await asyncio.wait_for(
            budget.reserve(Reservation(sibling, "tool", Usage(tool_calls=1))), BOUND_S
        )
    assert "held by 1 other reservation; waited 0.2 s" in info.value.detail
    assert held.id in [h.id for h in await budget.ledger.holds()]


async def test_a_run_not_started_from_another_has_no_ancestors() -> None:
    """A run's budget scope names the runs it was started from, and only those: an Agent
    run at top level has none, the same Agent run by a tool has its caller's run."""
    seen: list[BudgetScope] = []

    @tool
    def note() -> str:
        """Note the run's budget scope."""
        scope = active_scope.get()
        assert scope is not None
        seen.append(scope.budget_scope)
        return "noted"

    inner_turns: list[Any] = [{"tool_calls": [{"tool": "note", "args": {}}]}, "ok"]
    inner = Agent("i", model=ScriptedModel(inner_turns), tools=[note])

    @tool
    async def ask_inner() -> str:
        """Ask the inner agent."""
        return (await inner.run("go")).status

    outer_turns: list[Any] = [{"tool_calls": [{"tool": "ask_inner", "args": {}}]}, "done"]
    outer = Agent("o", model=ScriptedModel(outer_turns), tools=[ask_inner])
    top = await inner.run("alone")
    nested = await outer.run("x")
    assert seen[0].run_id == top.run_id and seen[0].ancestors == ()
    assert seen[1].run_id != nested.run_id
    assert seen[1].ancestors == (nested.run_id,)
