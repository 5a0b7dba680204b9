"""The engine counts every model call it made, once, by its call key: a node that catches a
call's `ModelError` (or the model's own exception) and goes on is counted for that call
whether it reports the usage the error carried in its own patch or not — never twice."""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Mapping
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.governance import BudgetConfig, InMemoryLedger, StandardBudget
from loomgraph.governance.ledger import NANO_USD
from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.spec import Graph
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelError, ModelRequest, Usage
from loomgraph.protocols.paths import journaled_usage

MODEL = "claude-sonnet-4-5"  # priced: the costs are compared too

module = types.ModuleType("lg_s32_caught")
sys.modules["lg_s32_caught"] = module


def ask() -> ModelRequest:
    return ModelRequest(messages=[{"role": "user", "content": "q"}])


async def report_error_usage(state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
    """Answers a fallback when the call fails, reporting what the error says it used."""
    try:
        response = await ctx.call_model(ask())
    except ModelError as err:
        return {"output": "fallback", "usage": err.usage.to_dict()}
    return {"output": response.text, "usage": response.usage.to_dict()}


async def report_nothing(state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
    """Answers a fallback when the call fails (with any error), reporting no usage."""
    try:
        await ctx.call_model(ask())
    except Exception:
        return {"output": "fallback"}
    return {"output": "answered"}


async def answer_fail_answer(state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
    """Three calls, the second of which fails and is caught: reports all three's usage."""
    usage = Usage()
    texts = []
    for _ in range(3):
        try:
            response = await ctx.call_model(ask())
        except ModelError as err:
            usage += err.usage
            continue
        usage += response.usage
        texts.append(response.text)
    return {"output": " ".join(texts), "usage": usage.to_dict()}


async def answers_only(state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
    """Three calls, the second of which fails and is caught: reports only the answers'."""
    usage = Usage()
    for _ in range(3):
        try:
            usage += (await ctx.call_model(ask())).usage
        except ModelError:
            continue
    return {"output": "done", "usage": usage.to_dict()}


for name, fn in {
    "report_error_usage": report_error_usage,
    "report_nothing": report_nothing,
    "answer_fail_answer": answer_fail_answer,
    "answers_only": answers_only,
}.items():
    setattr(module, name, fn)


def graph(call: str) -> Graph:
    return graph_from_yaml(
        "name: caught\nentry: s\nnodes:\n"
        f"  s: {{kind: function, call: 'lg_s32_caught:{call}', writes: [output, usage]}}\n"
        "  after: {kind: llm, prompt: 'and then', output: output}\n"
        "edges:\n  - {from: s, to: after}\n  - {from: after, to: END}\n"
    )


def budget() -> StandardBudget:
    return StandardBudget(BudgetConfig(model=MODEL, total_tokens=1_000_000), InMemoryLedger())


async def charged(spending: StandardBudget) -> Usage:
    spent = (await spending.totals("global")).spent
    return Usage(
        input_tokens=spent.get("input_tokens", 0),
        output_tokens=spent.get("output_tokens", 0),
        model_calls=spent.get("model_calls", 0),
        cost_usd=spent.get("cost_usd", 0) / NANO_USD,
    )


def same(reported: Usage, ledger: Usage) -> None:
    assert (reported.input_tokens, reported.output_tokens, reported.model_calls) == (
        ledger.input_tokens,
        ledger.output_tokens,
        ledger.model_calls,
    ), (reported, ledger)
    assert math.isclose(reported.cost_usd, ledger.cost_usd, abs_tol=1e-8), (reported, ledger)


BILLED = ModelError("provider down", usage=Usage(input_tokens=40, output_tokens=3))


@pytest.mark.parametrize(
    ("call", "turns", "calls"),
    [
        ("report_error_usage", [BILLED, "next"], 2),
        ("report_nothing", [BILLED, "next"], 2),
        ("report_nothing", [RuntimeError("connection reset"), "next"], 2),
        ("answer_fail_answer", ["one", BILLED, "three", "next"], 4),
        ("answers_only", ["one", BILLED, "three", "next"], 4),
    ],
    ids=["reports-the-error", "reports-nothing", "own-exception", "reports-all", "answers-only"],
)
async def test_a_caught_call_error_is_counted_once(call: str, turns: list[Any], calls: int) -> None:
    spending = budget()
    agent = Agent("x", model=ScriptedModel(turns), architecture=graph(call), budget=spending)
    result = await agent.run("q")
    assert result.status == "completed", result.reason
    assert result.usage.model_calls == calls
    same(result.usage, await charged(spending))
    # The node's transition carries the failed call once: the journal says what the run did.
    transitions = await agent.deps.runtime.transitions(result.run_id)
    assert journaled_usage(transitions) == result.usage


async def test_a_caught_error_then_a_node_retry_counts_each_call_once() -> None:
    """The first attempt catches an error, reports it, then fails; the retry answers: the
    first attempt's calls are counted by the engine, the retry's patch by its report."""
    failing = {"left": 1}

    async def catch_then_fail(state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
        try:
            response = await ctx.call_model(ask())
        except ModelError as err:
            usage = err.usage
        else:
            usage = response.usage
        if failing["left"]:
            failing["left"] -= 1
            raise ConnectionError("after the call")
        return {"output": "done", "usage": usage.to_dict()}

    module.catch_then_fail = catch_then_fail  # type: ignore[attr-defined]
    text = (
        "name: caught\nentry: s\nnodes:\n"
        "  s: {kind: function, call: 'lg_s32_caught:catch_then_fail', writes: [output, usage],"
        " retry: {attempts: 2, errors: [ConnectionError]}}\n"
        "edges:\n  - {from: s, to: END}\n"
    )
    spending = budget()
    model = ScriptedModel([BILLED, BILLED])
    agent = Agent("x", model=model, architecture=graph_from_yaml(text), budget=spending)
    result = await agent.run("q")
    assert result.status == "completed", result.reason
    assert result.usage.model_calls == 2
    same(result.usage, await charged(spending))
