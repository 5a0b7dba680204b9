"""The `map` node: one journaled branch per item, in parallel, results in item order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.errors import GraphValidationError
from loomgraph.models import ScriptedModel
from loomgraph.observability import FileAuditLog
from loomgraph.protocols import ModelChunk, ModelRequest, Transition
from loomgraph.runtime import SqliteRuntime
from loomgraph.runtime.memory import InMemoryRuntime

GRAPH = """
name: fanout
entry: split
state:
  cities: {type: 'list[str]'}
  reports: {type: 'list[str]', reducer: append, default: []}
nodes:
  split: {kind: function, call: 'tests.test_map:split', reads: [input], writes: [cities]}
  each: {kind: map, graph: react, over: cities, output: reports, concurrency: 2}
edges:
  - {from: split, to: each}
  - {from: each, to: END}
"""


def split(state: Mapping[str, Any]) -> dict[str, Any]:
    """The cities named in the prompt."""
    return {"cities": state["input"].split()}


def report(request: ModelRequest) -> str:
    return f"report on {request.messages[0]['content']}"


class Gate(ScriptedModel):
    """Lets a model call finish only once `width` calls are in flight together."""

    def __init__(self, width: int) -> None:
        super().__init__(report)
        self.width, self.running, self.peak = width, 0, 0
        self.full = asyncio.Event()

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        self.running += 1
        self.peak = max(self.peak, self.running)
        if self.running == self.width:
            self.full.set()
        await self.full.wait()
        async for chunk in super().stream(request):
            yield chunk
        self.running -= 1


async def test_items_run_as_parallel_branches_and_results_keep_item_order() -> None:
    model = Gate(width=2)
    agent = Agent("x", model=model, architecture=graph_from_yaml(GRAPH))
    result = await agent.run("Lima Oslo Pune Kyiv")
    assert result.status == "completed", result.reason
    history = await agent.history(result.run_id)
    assert history[-1].state["reports"] == [
        f"report on {c}" for c in ("Lima", "Oslo", "Pune", "Kyiv")
    ]
    assert model.peak == 2  # the concurrency limit held, and branches did overlap
    branch_nodes = {c.node for c in history if c.node.startswith("each/")}
    assert branch_nodes == {f"each/{i}/model" for i in range(4)}
    assert result.usage.model_calls == 4


async def test_after_a_failure_only_unfinished_branches_run_again(tmp_path: Path) -> None:
    asked: list[str] = []
    broken = {"Pune"}

    def flaky(request: ModelRequest) -> str:
        city = request.messages[0]["content"]
        asked.append(city)
        if city in broken:
            raise ConnectionError(f"no data for {city}")
        return f"report on {city}"

    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    graph = graph_from_yaml(GRAPH.replace("concurrency: 2", "concurrency: 1"))
    agent = Agent("x", model=ScriptedModel(flaky), architecture=graph, runtime=runtime)
    cities = ["Lima", "Oslo", "Pune", "Kyiv"]
    failed = await agent.run(" ".join(cities))
    assert failed.status == "failed" and "Pune" in failed.reason
    # Kyiv's branch may have finished before Pune's failure cancelled it (a branch that
    # never waits cannot be cancelled mid-way): finished branches are journaled either way.
    finished = {
        int(e.key.rsplit(":", 1)[1])
        for e in await runtime.effects(failed.run_id)
        if e.kind == "branch" and e.status == "done"
    }
    assert {0, 1} <= finished and 2 not in finished
    broken.clear()
    asked.clear()
    done = await agent.resume(failed.run_id)
    assert done.status == "completed"
    # Only the unfinished branches ran again; Lima and Oslo were read from the journal.
    assert asked == [c for i, c in enumerate(cities) if i not in finished]
    history = await agent.history(failed.run_id)
    assert history[-1].state["reports"] == [
        f"report on {c}" for c in ("Lima", "Oslo", "Pune", "Kyiv")
    ]
    await runtime.close()


def test_map_over_a_field_that_is_not_a_list_is_invalid() -> None:
    bad = GRAPH.replace("cities: {type: 'list[str]'}", "cities: {type: str}")
    with pytest.raises(GraphValidationError) as err:
        graph_from_yaml(bad)
    assert "kind-check" in err.value.rules and "not a list" in str(err.value)


@pytest.mark.parametrize("cities", [3, 4])
async def test_a_list_longer_than_max_items_ends_the_run_before_any_branch(cities: int) -> None:
    bounded = GRAPH.replace("concurrency: 2}", "concurrency: 2, max_items: 3}")
    model = ScriptedModel(report)
    agent = Agent("x", model=model, architecture=graph_from_yaml(bounded))
    result = await agent.run(" ".join(["Lima", "Oslo", "Pune", "Kyiv"][:cities]))
    if cities <= 3:
        assert (result.status, result.usage.model_calls) == ("completed", 3)
    else:
        assert result.status == "limit_reached"
        assert result.reason == "item limit of map 'each' reached: 4 items in 'cities', at most 3"
        assert result.usage.model_calls == 0  # no branch started


async def test_plan_execute_stops_a_plan_of_more_steps_than_it_maps() -> None:
    # A model that plans 10,000 steps started 10,000 agents; the built-in graph maps 20.
    plan = {"steps": [f"step {i}" for i in range(10_000)], "parallel": False}
    model = ScriptedModel([{"tool_calls": [{"tool": "respond", "args": plan}]}])
    agent = Agent("x", model=model, architecture="plan-execute")
    result = await agent.run("do it")
    assert result.status == "limit_reached"
    assert "10000 items in 'plan.steps', at most 20" in result.reason
    assert result.usage.model_calls == 1


class SlowFirstAppend(InMemoryRuntime):
    """Hands the loop to other tasks many times before the first branch transition is
    written, as a journal on another connection may commit a later one first."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[int] = []
        self.delayed = False

    async def append_transition(self, transition: Transition) -> None:
        if "/" in transition.node and not self.delayed:
            self.delayed = True
            for _ in range(50):
                await asyncio.sleep(0)
        await super().append_transition(transition)
        self.written.append(transition.seq)


async def test_concurrent_branches_journal_audit_and_report_each_seq_once(
    tmp_path: Path,
) -> None:
    runtime = SlowFirstAppend()
    audit = FileAuditLog(tmp_path / "audit.jsonl", unsigned=True)
    model = Gate(width=2)
    graph = graph_from_yaml(GRAPH)
    agent = Agent("x", model=model, architecture=graph, runtime=runtime, audit_log=audit)
    events = [e async for e in agent.stream("Lima Oslo Pune Kyiv")]
    assert events[-1].payload["status"] == "completed"
    assert runtime.written == sorted(runtime.written)  # seqs are written in order
    journal = {t.seq: (t.node, t.visit) for t in await runtime.transitions(events[0].run_id)}
    audited = [e["payload"] for e in audit.entries() if e["action"] == "transition"]
    assert {p["seq"]: (p["node"], p["visit"]) for p in audited} == journal
    assert len(audited) == len(journal)  # no seq audited twice
    completed = [e for e in events if e.kind == "node_completed"]
    assert {e.seq: (e.node, e.payload["visit"]) for e in completed} == journal
