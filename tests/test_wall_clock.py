"""A run's wall-clock deadline stops what is running at that moment: a model call or a tool
call in flight is cut off and charged, and the run ends `budget_exhausted`; a node's own,
shorter time limit still fails it as before."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from loomgraph import Agent, tool
from loomgraph.authoring.library import load_graph
from loomgraph.authoring.loader import graph_from_data
from loomgraph.governance import BudgetConfig, Caps, StandardBudget, StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest
from loomgraph.runtime.sqlite import SqliteRuntime

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


# ------------------------------------------- a deadline kept from caps a resume no longer has


def _asking(runtime: SqliteRuntime, budget: StandardBudget, model: Any, ran: list[str]) -> Agent:
    """An agent whose `pay` call waits for approval."""

    @tool
    async def pay(amount: int) -> str:
        """Pay an amount."""
        ran.append(f"pay {amount}")
        return "paid"

    return Agent(
        "x",
        model=model,
        tools=[pay],
        runtime=runtime,
        budget=budget,
        permissions=StandardPermissions(ask=["pay"]),
    )


async def _paused(tmp_path: Path, wall_clock_s: float, ran: list[str]) -> tuple[SqliteRuntime, str]:
    """A run under a per-user wall-clock cap, stopped to ask about a payment."""
    runtime = SqliteRuntime(tmp_path / "journal.db")
    budget = StandardBudget(BudgetConfig(per_user=Caps(wall_clock_s=wall_clock_s, tool_calls=9)))
    model = ScriptedModel([{"tool_calls": [{"tool": "pay", "args": {"amount": 5}}]}, "done"])
    first = _asking(runtime, budget, model, ran)
    paused = await first.run("pay", user_id="bob")
    assert paused.status == "awaiting_approval", paused
    await first.aclose()
    return SqliteRuntime(tmp_path / "journal.db"), paused.run_id


async def test_a_deadline_kept_from_caps_the_resumed_budget_lacks_still_refuses(
    tmp_path: Path,
) -> None:
    """Resumed with `override_policy` under a budget without a wall-clock cap, a run keeps the
    deadline it started with: past it, its next reservation is refused, named as the run's
    own deadline (`run:wall_clock_s`), and the approved call is not made."""
    ran: list[str] = []
    runtime, run_id = await _paused(tmp_path, 1000.0, ran)
    later = StandardBudget(
        BudgetConfig(per_user=Caps(tool_calls=9)), clock=lambda: time.time() + 5000.0
    )
    second = _asking(runtime, later, ScriptedModel(["done"]), ran)
    try:
        result = await asyncio.wait_for(
            second.resume(run_id, approve=True, override_policy=True), BOUND_S
        )
    finally:
        await second.aclose()
    assert result.status == "budget_exhausted", result
    assert result.reason is not None and "'run:wall_clock_s'" in result.reason, result
    assert ran == []


async def test_a_kept_deadline_passing_mid_visit_names_the_run_as_its_scope(
    tmp_path: Path,
) -> None:
    """The same kept deadline passing while a model call runs: the call is stopped and the
    run ends naming `run:wall_clock_s` (not a bare `wall_clock_s`)."""
    ran: list[str] = []
    runtime, run_id = await _paused(tmp_path, 0.3, ran)
    model = HangingModel()
    second = _asking(runtime, StandardBudget(BudgetConfig(per_user=Caps(tool_calls=9))), model, ran)
    try:
        events = [
            e
            async for e in _bounded(
                second.resume_stream(run_id, approve=True, override_policy=True)
            )
        ]
    finally:
        await second.aclose()
    result = events[-1].payload["result"]
    assert result["status"] == "budget_exhausted", result
    caps = [e.payload["cap"] for e in events if e.kind == "budget_exceeded"]
    assert caps == ["run:wall_clock_s"], caps


async def _bounded(events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async with asyncio.timeout(BOUND_S):
        async for event in events:
            yield event


async def test_a_deadline_passed_while_the_run_waited_names_what_its_cap_allows(
    tmp_path: Path,
) -> None:
    """Resumed after its deadline passed: the refusal said `deadline - start` as what was
    allowed, with the start of the resume's clock, so a run paused past its deadline read
    "(-0.54s allowed)". It names the cap's own allowance now."""
    ran: list[str] = []
    runtime, run_id = await _paused(tmp_path, 1000.0, ran)
    later = StandardBudget(
        BudgetConfig(per_user=Caps(wall_clock_s=1000.0, tool_calls=9)),
        clock=lambda: time.time() + 5000.0,
    )
    second = _asking(runtime, later, ScriptedModel(["done"]), ran)
    try:
        result = await asyncio.wait_for(second.resume(run_id, approve=True), BOUND_S)
    finally:
        await second.aclose()
    assert result.status == "budget_exhausted", result
    assert "(1000s allowed by user:bob:wall_clock_s)" in (result.reason or ""), result.reason
    assert ran == []


# ----------------------------------------------------- the budget's clock, not the session's


class Clock:
    """A clock the test moves (seconds since the epoch, as a budget's `clock` gives)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_a_new_runs_deadline_is_set_by_the_budgets_own_clock() -> None:
    """A budget given its own clock (time simulated in a test, a clock kept elsewhere) set a
    new run's deadline from the session's `time.time()` instead: 50 s of its clock passing
    in a tool call stopped nothing, and the run went on to its end."""
    clock = Clock(1000.0)
    calls: list[int] = []

    @tool
    async def wait(minutes: int) -> str:
        """Wait some minutes."""
        calls.append(minutes)
        clock.now += 60 * minutes
        return "waited"

    budget = StandardBudget(BudgetConfig(wall_clock_s=50, tool_calls=9), clock=clock)
    step = {"tool_calls": [{"tool": "wait", "args": {"minutes": 1}}]}
    agent = Agent("x", model=ScriptedModel([step, step, "done"]), tools=[wait], budget=budget)
    result = await asyncio.wait_for(agent.run("go"), BOUND_S)
    assert result.status == "budget_exhausted", result
    assert "global:wall_clock_s" in (result.reason or ""), result.reason
    assert calls == [1]


async def test_a_resumed_runs_clock_starts_when_the_run_did(tmp_path: Path) -> None:
    """Resumed on a ledger that never saw the run (moved, `override_policy`), a run kept its
    deadline but its clock's start was the resume, so `warn_at` measured the part of its time
    left after the pause, not the part gone. The ledger keeps the run's own start now."""
    from loomgraph.governance.sqlite_ledger import SqliteLedger

    runtime, run_id = await _paused(tmp_path, 1000.0, [])
    kept: list[tuple[float, float]] = []

    @tool
    async def pay(amount: int) -> str:
        """Pay an amount."""
        with sqlite3.connect(tmp_path / "ledger.db") as db:
            kept.extend(db.execute("SELECT started_at, deadline FROM loom_budget_runs"))
        return "paid"

    ledger = SqliteLedger(tmp_path / "ledger.db")
    later = StandardBudget(BudgetConfig(per_user=Caps(wall_clock_s=1000.0, tool_calls=9)), ledger)
    model = ScriptedModel([{"tool_calls": [{"tool": "pay", "args": {"amount": 5}}]}, "done"])
    second = Agent(
        "x",
        model=model,
        tools=[pay],
        runtime=runtime,
        budget=later,
        permissions=StandardPermissions(ask=["pay"]),
    )
    try:
        result = await asyncio.wait_for(
            second.resume(run_id, approve=True, override_policy=True), BOUND_S
        )
        record = await runtime.load_run(run_id)
    finally:
        await second.aclose()
    assert result.status == "completed", result
    assert record is not None
    assert kept == [(record.created_at, record.deadline)], (kept, record.created_at)
