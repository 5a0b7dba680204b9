"""A model call cut off by its node's `timeout`, or by the run's wall-clock deadline, is
charged as a cancelled call (its prompt and what it streamed) and counted in the run's usage
once, by its call key, like a call that failed: when the run ends on it, when a node retry
answers, inside a child graph, and after a resume."""

from __future__ import annotations

import asyncio
import math
import sys
import types
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.governance import BudgetConfig, Caps, InMemoryLedger, StandardBudget
from loomgraph.governance.ledger import NANO_USD
from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.spec import Graph
from loomgraph.protocols import ModelChunk, ModelRequest, ToolCall, Usage
from loomgraph.protocols.paths import journaled_usage

MODEL = "claude-sonnet-4-5"  # priced: the run's cost is compared with the ledger's too
# A bound on every wait of a run that should end at a time limit of a fraction of a second:
# only a run that is never stopped reaches it.
BOUND_S = 60.0


class StallingModel:
    """Streams a partial answer, then waits on an event that is never set (a provider that
    hangs mid-stream) for its first `stalls` calls; answers in full after them. A turn may
    also be a tool call (`calls`, by call index), answered at once."""

    name = MODEL

    def __init__(self, stalls: int = 1, calls: dict[int, ToolCall] | None = None) -> None:
        self.stalls = stalls
        self.calls = calls or {}
        self.asked = 0
        self.stalled = 0

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        self.asked += 1
        call = self.calls.get(request.call_index)
        if call is not None:
            yield {"type": "tool_call", "call": call}
            yield {"type": "usage", "usage": Usage(input_tokens=30, output_tokens=7)}
            yield {"type": "finish", "finish_reason": "tool_use"}
            return
        yield {"type": "text", "text": "a partial answer that streamed before the stall "}
        if self.stalled < self.stalls:
            self.stalled += 1
            await asyncio.Event().wait()  # never set: only a time limit ends it
        yield {"type": "text", "text": "and its end"}
        yield {"type": "usage", "usage": Usage(input_tokens=20, output_tokens=12)}
        yield {"type": "finish", "finish_reason": "end_turn"}


async def wait_a_little(state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
    """A node with a time limit of its own around its call: it goes on without the answer."""
    try:
        async with asyncio.timeout(0.3):
            response = await ctx.call_model(
                ModelRequest(messages=[{"role": "user", "content": "q"}])
            )
    except TimeoutError:
        return {"output": "no answer in time"}
    return {"output": response.text, "usage": response.usage.to_dict()}


module = types.ModuleType("lg_s32_cutoff")
module.wait_a_little = wait_a_little  # type: ignore[attr-defined]
sys.modules["lg_s32_cutoff"] = module


def budget(**caps: Any) -> StandardBudget:
    return StandardBudget(
        BudgetConfig(model=MODEL, total_tokens=1_000_000, **caps), InMemoryLedger()
    )


async def charged(spending: StandardBudget, scope: str = "global") -> Usage:
    """What the ledger charged in `scope`, as a usage (the cost back in dollars)."""
    spent = (await spending.totals(scope)).spent
    return Usage(
        input_tokens=spent.get("input_tokens", 0),
        output_tokens=spent.get("output_tokens", 0),
        model_calls=spent.get("model_calls", 0),
        cost_usd=spent.get("cost_usd", 0) / NANO_USD,
    )


def same(reported: Usage, ledger: Usage) -> None:
    """The run's usage is what the ledger charged (the ledger rounds each cost up to a nano-
    dollar)."""
    assert reported.with_model_calls(0).to_dict().keys() - {"cost_usd"} <= {
        "input_tokens",
        "output_tokens",
    }
    assert (reported.input_tokens, reported.output_tokens, reported.model_calls) == (
        ledger.input_tokens,
        ledger.output_tokens,
        ledger.model_calls,
    ), (reported, ledger)
    assert math.isclose(reported.cost_usd, ledger.cost_usd, abs_tol=1e-8), (reported, ledger)


def llm_graph(policy: str = "") -> Graph:
    return graph_from_yaml(
        "name: cut\nentry: ask\nnodes:\n"
        f'  ask: {{kind: llm, prompt: "{{{{ input }}}}", output: output, timeout: 0.3{policy}}}\n'
        "edges:\n  - {from: ask, to: END}\n"
    )


async def bounded(run: Any) -> Any:
    return await asyncio.wait_for(run, BOUND_S)


async def test_a_call_cut_off_by_its_node_timeout_is_counted_as_charged() -> None:
    spending = budget()
    model = StallingModel()
    agent = Agent("x", model=model, architecture=llm_graph(), budget=spending)
    result = await bounded(agent.run("q"))
    assert result.status == "failed" and "timeout" in result.reason, result.reason
    assert model.asked == 1
    ledger = await charged(spending)
    assert ledger.model_calls == 1 and ledger.output_tokens > 0  # its prompt and what streamed
    same(result.usage, ledger)


async def test_a_node_retry_after_a_cut_off_call_carries_it_in_its_transition() -> None:
    spending = budget()
    graph = llm_graph(", retry: {attempts: 2, errors: [TimeoutError]}")
    agent = Agent("x", model=StallingModel(), architecture=graph, budget=spending)
    result = await bounded(agent.run("q"))
    assert result.status == "completed", result.reason
    assert result.usage.model_calls == 2
    same(result.usage, await charged(spending))
    # The answering visit's transition carries the call cut off before it: the journal (a
    # resume, a report) counts it as the run did.
    transitions = await agent.deps.runtime.transitions(result.run_id)
    assert journaled_usage(transitions) == result.usage
    # The cut-off attempt is journaled, as a failed attempt is.
    effects = await agent.deps.runtime.effects(result.run_id)
    attempts = [e for e in effects if e.kind == "model_attempt"]
    assert len(attempts) == 1 and attempts[0].outcome is not None
    assert Usage.from_dict(attempts[0].outcome["usage"]).model_calls == 1


async def test_a_call_a_node_cut_off_itself_is_carried_by_its_transition() -> None:
    graph = graph_from_yaml(
        "name: own\nentry: s\nnodes:\n"
        "  s: {kind: function, call: 'lg_s32_cutoff:wait_a_little', writes: [output, usage]}\n"
        '  after: {kind: llm, prompt: "and then", output: output}\n'
        "edges:\n  - {from: s, to: after}\n  - {from: after, to: END}\n"
    )
    spending = budget()
    agent = Agent("x", model=StallingModel(), architecture=graph, budget=spending)
    result = await bounded(agent.run("q"))
    assert result.status == "completed", result.reason
    assert result.usage.model_calls == 2
    same(result.usage, await charged(spending))
    transitions = await agent.deps.runtime.transitions(result.run_id)
    assert journaled_usage(transitions) == result.usage
    assert transitions[0].node == "s" and transitions[0].usage.model_calls == 1


async def test_a_call_cut_off_at_the_run_deadline_is_counted_as_charged() -> None:
    spending = budget(per_user=Caps(wall_clock_s=0.3, model_calls=100))
    agent = Agent("x", model=StallingModel(), budget=spending)
    result = await bounded(agent.run("q", user_id="bob"))
    assert result.status == "budget_exhausted" and "wall_clock_s" in result.reason
    ledger = await charged(spending)
    assert ledger.model_calls == 1 and ledger.output_tokens > 0
    same(result.usage, ledger)


async def test_a_deadline_inside_a_child_graph_counts_its_calls_and_the_cut_off_one() -> None:
    """The deadline stops a `subgraph` node whose child graph answered a call, ran a tool and
    was cut off in its second call: each call counted, as the ledger charged it."""

    async def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    graph = graph_from_yaml(
        "name: outer\nentry: work\nnodes:\n"
        "  work: {kind: subgraph, graph: react, inputs: {input: input},"
        " outputs: {output: output}}\n"
        "edges:\n  - {from: work, to: END}\n"
    )
    spending = budget(per_user=Caps(wall_clock_s=0.4, model_calls=100))
    model = StallingModel(calls={0: ToolCall(id="c1", tool="add", args={"a": 1, "b": 2})})
    agent = Agent("x", model=model, tools=[add], architecture=graph, budget=spending)
    result = await bounded(agent.run("q", user_id="bob"))
    assert result.status == "budget_exhausted", result.reason
    assert model.asked == 2
    ledger = await charged(spending)
    assert ledger.model_calls == 2
    same(result.usage, ledger)


@pytest.mark.parametrize("where", ["top", "child"])
async def test_a_resumed_run_counts_the_cut_off_call_once(tmp_path: Path, where: str) -> None:
    """A run that failed on a cut-off call, resumed on its SQLite journal (the ledger in the
    same file), reports what a run whose node retry answered reports, and what the ledger
    charged: the cut-off call once, the call made again once."""
    graph: Graph | Path
    retried: Graph | Path
    if where == "top":
        graph = llm_graph()
        retried = llm_graph(", retry: {attempts: 2, errors: [TimeoutError]}")
    else:
        inner = tmp_path / "inner.yaml"
        inner.write_text(
            "name: inner\nentry: ask\nnodes:\n"
            '  ask: {kind: llm, prompt: "{{ input }}", output: output, timeout: 0.3}\n'
            "edges:\n  - {from: ask, to: END}\n"
        )
        outer = (
            "name: outer\nentry: work\nnodes:\n"
            "  work: {kind: subgraph, graph: inner.yaml, inputs: {input: input},"
            " outputs: {output: output}%s}\n"
            "edges:\n  - {from: work, to: END}\n"
        )
        (tmp_path / "outer.yaml").write_text(outer % "")
        (tmp_path / "outer_retried.yaml").write_text(
            outer % ", retry: {attempts: 2, errors: [NodeError, TimeoutError]}"
        )
        graph, retried = tmp_path / "outer.yaml", tmp_path / "outer_retried.yaml"

    def agent(journal: str, graph: Graph | Path, model: StallingModel) -> Agent:
        return Agent(
            "x",
            model=model,
            architecture=graph,
            budget=budget(),
            runtime=f"sqlite:{tmp_path / journal}",
        )

    whole_agent = agent("whole.db", retried, StallingModel())
    whole = await bounded(whole_agent.run("q"))
    assert whole.status == "completed", whole.reason
    assert whole.usage.model_calls == 2
    same(whole.usage, await charged(whole_agent.deps.budget))  # type: ignore[arg-type]

    failed = await bounded(agent("cut.db", graph, StallingModel()).run("q"))
    assert failed.status == "failed", failed.reason
    resuming = agent("cut.db", graph, StallingModel(stalls=0))
    resumed = await bounded(resuming.resume(failed.run_id))
    assert resumed.status == "completed", resumed.reason
    assert resumed.usage == whole.usage
    same(resumed.usage, await charged(resuming.deps.budget))  # type: ignore[arg-type]
