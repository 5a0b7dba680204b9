"""What a run's journaled steps used: each model call once, whether the run stopped inside a
child graph or after the node that ran it (which carries its children's usage)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loomgraph import Agent
from loomgraph.eval.dataset import Case
from loomgraph.eval.journal import raised_outcome
from loomgraph.models import ScriptedModel
from loomgraph.protocols import Transition, Usage
from loomgraph.protocols.paths import journaled_usage, top_level
from loomgraph.runtime.errors import JournalUnavailable
from loomgraph.runtime.sqlite import SqliteRuntime


@dataclass
class Step:
    node: str
    usage: Usage


def calls(n: int) -> Usage:
    return Usage(model_calls=n)


def test_a_finished_child_graph_is_counted_once_by_its_node() -> None:
    steps = [
        Step("plan", calls(1)),
        Step("each/0/model", calls(1)),
        Step("each/1/model", calls(1)),
        Step("each", calls(2)),  # carries its branches
        Step("replan", calls(1)),
    ]
    assert journaled_usage(steps).model_calls == 4
    assert [s.node for s in top_level(steps)] == ["plan", "each", "replan"]


def test_a_child_graph_still_running_is_counted_by_its_own_steps() -> None:
    steps = [
        Step("each/0/model", calls(1)),
        Step("each", calls(1)),  # the first visit of `each`
        Step("each/0/model", calls(1)),  # the second visit, cut off: no `each` step after it
        Step("each/0/step/model", calls(1)),
        Step("each/0/step", calls(1)),  # carries the one above
    ]
    assert journaled_usage(steps).model_calls == 3


class Outage(SqliteRuntime):
    """A journal out of reach when the run would journal its `replan` step."""

    async def append_transition(self, transition: Transition) -> None:
        if transition.node == "replan":
            raise JournalUnavailable(self.path, "out of reach")
        await super().append_transition(transition)


async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def test_eval_counts_a_run_that_raised_inside_a_strategy_once(tmp_path: Path) -> None:
    plan = {"tool_calls": [{"tool": "respond", "args": {"steps": ["one", "two"]}}]}
    step = {"tool_calls": [{"tool": "add", "args": {"a": 1, "b": 2}}]}
    replan = {"tool_calls": [{"tool": "respond", "args": {"done": True, "answer": "3"}}]}
    model = ScriptedModel([plan, step, "3", step, "3", replan])
    runtime = Outage(tmp_path / "j.db")
    agent = Agent("x", model=model, tools=[add], architecture="plan-execute", runtime=runtime)
    run_ids: list[str] = []
    error: Exception | None = None
    try:
        async for event in agent.stream("go"):
            run_ids.append(event.run_id)
    except JournalUnavailable as err:
        error = err
    assert error is not None
    outcome = await raised_outcome(
        agent, Case(id="c", input="go"), ("p", "c", 0), run_ids[0], error
    )
    # plan, two turns in each of two steps: journaled (the replan's call is not: its step's
    # transition never was). Summing every transition counted the steps' calls twice.
    assert outcome.usage.model_calls == 5
    assert outcome.node_visits == {"plan": 1, "execute_serial": 1}  # the run's own nodes
    await runtime.close()
