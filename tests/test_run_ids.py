"""A run id names one run: a session given the id of a journaled run is refused with
`RunExists` before it opens anything, and the journaled run, its budget holds and its
clock are left as they were."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent, tool
from loomgraph.governance import BudgetConfig, StandardBudget
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest, Runtime
from loomgraph.runtime import SqliteRuntime
from loomgraph.runtime.errors import RunExists
from loomgraph.runtime.memory import InMemoryRuntime


def _memory(_: Path) -> Runtime:
    return InMemoryRuntime()


def _sqlite(tmp_path: Path) -> Runtime:
    return SqliteRuntime(str(tmp_path / "journal.db"))


RUNTIMES = [pytest.param(_memory, id="memory"), pytest.param(_sqlite, id="sqlite")]


@pytest.mark.parametrize("make_runtime", RUNTIMES)
async def test_a_finished_runs_id_is_refused_and_the_run_kept(
    tmp_path: Path, make_runtime: Callable[[Path], Runtime]
) -> None:
    asked: list[str] = []

    def script(request: ModelRequest) -> object:
        asked.append(str(request.messages[-1]["content"]))
        return f"answer {len(asked)}"

    runtime = make_runtime(tmp_path)
    agent = Agent("x", model=ScriptedModel(script), runtime=runtime)
    first = await agent.run("first prompt")
    record = await runtime.load_run(first.run_id)
    transitions = await runtime.transitions(first.run_id)
    effects = await runtime.effects(first.run_id)

    session = agent.session("second prompt", run_id=first.run_id)
    with pytest.raises(RunExists, match=f"{first.run_id}.*journaled already"):
        await session.execute(agent.deps.hooks.on_event)

    assert asked == ["first prompt"]  # the model was not asked again, nor replayed
    assert await runtime.load_run(first.run_id) == record
    assert await runtime.transitions(first.run_id) == transitions
    assert await runtime.effects(first.run_id) == effects
    assert record is not None and record.result is not None
    assert record.result["output"] == "answer 1"
    await agent.aclose()


async def test_a_running_runs_id_leaves_its_holds_and_clock_alone() -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    @tool
    async def wait() -> str:
        """Wait until the test lets go."""
        entered.set()
        await release.wait()
        return "done"

    turns: list[Any] = [{"tool_calls": [{"tool": "wait", "args": {}}]}, "finished"]
    budget = StandardBudget(BudgetConfig(tool_calls=5, wall_clock_s=600))
    agent = Agent("x", model=ScriptedModel(turns), tools=[wait], budget=budget)
    session = agent.session("go")
    running = asyncio.create_task(session.execute(agent.deps.hooks.on_event))
    await asyncio.wait_for(entered.wait(), 10)
    ledger = budget.ledger
    holds = await ledger.holds(session.run_id)
    assert holds  # the tool call's reservation
    clock = budget._run_clocks.runs[session.run_id]

    duplicate = agent.session("again", run_id=session.run_id)
    with pytest.raises(RunExists):
        await duplicate.execute(agent.deps.hooks.on_event)

    assert await ledger.holds(session.run_id) == holds
    assert budget._run_clocks.runs[session.run_id] == clock
    release.set()
    result = await asyncio.wait_for(running, 10)
    assert (result.status, result.output) == ("completed", "finished")
    totals = await budget.totals("global")
    assert totals.spent["tool_calls"] == 1 and not totals.reserved.get("tool_calls")
    await agent.aclose()
