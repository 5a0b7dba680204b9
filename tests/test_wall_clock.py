"""A run's wall-clock deadline stops what is running at that moment: a model call or a tool
call in flight is cut off and charged, and the run ends `budget_exhausted`; a node's own,
shorter time limit still fails it as before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from loomgraph import Agent, tool
from loomgraph.authoring.library import load_graph
from loomgraph.authoring.loader import graph_from_data
from loomgraph.governance import BudgetConfig, Caps, StandardBudget
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest

# Generous bounds on waits that end at a deadline of a fraction of a second: only a run
# that is never stopped reaches them.
BOUND_S = 30.0


class HangingModel:
    """A model whose answer never comes (a provider that hangs)."""

    name = "hanging"

    def __init__(self) -> None:
        self.asked = 0

    async def stream(self, request: ModelRequest) -> AsyncIterator[dict[str, Any]]:
        self.asked += 1
        yield {"type": "text", "text": "thinking"}
        await asyncio.Event().wait()


async def test_a_model_call_in_flight_at_the_deadline_is_stopped_and_charged() -> None:
    # (a cap on model calls too: a ledger keeps what some cap measures)
    budget = StandardBudget(BudgetConfig(per_user=Caps(wall_clock_s=0.2, model_calls=100)))
    model = HangingModel()
    agent = Agent("x", model=model, budget=budget)
    events = [e async for e in _bounded(agent.stream("go", user_id="bob"))]
    result = events[-1].payload["result"]
    assert result["status"] == "budget_exhausted", result
    assert "user:bob:wall_clock_s" in result["reason"] and "'model' was stopped" in result["reason"]
    assert [e.payload["cap"] for e in events if e.kind == "budget_exceeded"] == [
        "user:bob:wall_clock_s"
    ]
    assert model.asked == 1
    spent = (await budget.totals("user:bob")).spent
    assert spent["model_calls"] == 1 and spent["input_tokens"] > 0  # the cut-off call's prompt
    assert not (await budget.totals("user:bob")).reserved.get("model_calls")


async def test_a_tool_call_in_flight_at_the_deadline_is_stopped_and_charged() -> None:
    stopped: list[str] = []

    @tool
    async def crawl(url: str) -> str:
        """Fetch a page (this one never answers)."""
        try:
            await asyncio.Event().wait()
        finally:
            stopped.append(url)
        return "page"

    budget = StandardBudget(BudgetConfig(wall_clock_s=0.2, tool_calls=100))
    model = ScriptedModel([{"tool_calls": [{"tool": "crawl", "args": {"url": "a"}}]}, "done"])
    agent = Agent("x", model=model, tools=[crawl], budget=budget)
    result = await asyncio.wait_for(agent.run("go"), BOUND_S)
    assert result.status == "budget_exhausted"
    assert "global:wall_clock_s" in result.reason and "'tools' was stopped" in result.reason
    assert stopped == ["a"]  # cancelled, its finally ran
    assert (await budget.totals()).spent["tool_calls"] == 1


async def test_a_node_time_limit_shorter_than_the_deadline_still_fails_the_run() -> None:
    data = load_graph("react").to_data()
    data["nodes"]["model"]["timeout"] = 0.05
    budget = StandardBudget(BudgetConfig(wall_clock_s=600))
    agent = Agent("x", model=HangingModel(), budget=budget, architecture=graph_from_data(data))
    result = await asyncio.wait_for(agent.run("go"), BOUND_S)
    assert result.status == "failed"
    assert "took longer than its timeout of 0.05 s" in result.reason


async def _bounded(events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async with asyncio.timeout(BOUND_S):
        async for event in events:
            yield event
