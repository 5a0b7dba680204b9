"""A run that stops or fails inside a child graph counts what the child graph used: the
node's transition would have carried it, and the ledger charged it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loomgraph import Agent
from loomgraph.governance import BudgetConfig, InMemoryLedger, StandardBudget
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest


async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def respond(args: dict[str, Any]) -> dict[str, Any]:
    return {"tool_calls": [{"tool": "respond", "args": args}]}


ADD = {"tool_calls": [{"tool": "add", "args": {"a": 1, "b": 2}}]}


async def test_a_budget_stop_inside_a_map_branch_counts_the_branches_calls() -> None:
    plan = respond({"steps": ["one", "two"]})
    model = ScriptedModel([plan, ADD, "3", ADD, "3", respond({"done": True, "answer": "3"})])
    budget = StandardBudget(BudgetConfig(tool_calls=1), InMemoryLedger())
    agent = Agent("x", model=model, tools=[add], architecture="plan-execute", budget=budget)
    result = await agent.run("go")
    assert result.status == "budget_exhausted"
    spent = (await budget.totals("global")).spent
    # The plan, step one's two calls and step two's first: each charged, each reported.
    assert result.usage.model_calls == spent["model_calls"] == 4
    record = await agent.deps.runtime.load_run(result.run_id)
    assert record is not None and record.result is not None
    assert record.result["usage"]["model_calls"] == 4


async def test_a_stop_for_an_approval_inside_a_subgraph_counts_its_calls() -> None:
    from loomgraph.governance import StandardPermissions

    model = ScriptedModel([ADD, "3", respond({"score": 0.9})])
    permissions = StandardPermissions(ask=["add"])
    agent = Agent("x", model=model, tools=[add], architecture="reflexion", permissions=permissions)
    waiting = await agent.run("go")
    assert waiting.status == "awaiting_approval"
    assert waiting.usage.model_calls == 1  # the attempt's call that asked for the tool
    done = await agent.resume(waiting.run_id, approve=True)
    assert done.status == "completed" and done.usage.model_calls == 3  # each once


async def test_a_retried_subgraph_node_counts_its_replayed_calls_once(tmp_path: Path) -> None:
    (tmp_path / "outer.yaml").write_text(
        "name: outer\nentry: work\n"
        "nodes:\n  work: {kind: subgraph, graph: react, inputs: {input: input},"
        " outputs: {output: output}, retry: {attempts: 2, backoff: 0}}\n"
        "edges:\n  - {from: work, to: END}\n"
    )
    failed: list[int] = []

    def answer(request: ModelRequest) -> Any:
        if request.call_index == 1 and not failed:  # the second call fails once
            failed.append(1)
            raise ConnectionError("dropped")
        return ADD if request.call_index == 0 else "3"

    agent = Agent(
        "x", model=ScriptedModel(answer), tools=[add], architecture=tmp_path / "outer.yaml"
    )
    result = await agent.run("go")
    assert result.status == "completed", result.reason
    # Two calls that answered and the one that failed; the first, replayed by the retry,
    # is counted once.
    assert result.usage.model_calls == 3


async def test_a_call_that_fails_in_every_retry_is_counted_each_time(tmp_path: Path) -> None:
    """Each attempt of the node made the call again and was charged for it: the run's usage
    says so (it counted the call once, whatever the retries)."""
    (tmp_path / "outer.yaml").write_text(
        "name: outer\nentry: work\n"
        "nodes:\n  work: {kind: subgraph, graph: react, inputs: {input: input},"
        " outputs: {output: output}, retry: {attempts: 3, backoff: 0}}\n"
        "edges:\n  - {from: work, to: END}\n"
    )

    def answer(request: ModelRequest) -> Any:
        if request.call_index == 0:
            return ADD
        raise ConnectionError("dropped")

    budget = StandardBudget(BudgetConfig(model_calls=100), InMemoryLedger())
    agent = Agent(
        "x",
        model=ScriptedModel(answer),
        tools=[add],
        architecture=tmp_path / "outer.yaml",
        budget=budget,
    )
    result = await agent.run("go")
    assert result.status == "failed"
    spent = (await budget.totals("global")).spent
    assert result.usage.model_calls == spent["model_calls"] == 4  # the first, three failures
