"""A model's own failure is a failed call whatever its class: `ScriptedModel` running out of
script (`ScriptExhausted`, a `LoomgraphError`) is charged, journaled failed and counted in
the run's usage like any failed call, and reaches the user with its message; only the
budget's refusal (and a service out of reach) is the engine's own."""

from __future__ import annotations

from collections.abc import AsyncIterator

from loomgraph import Agent
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.errors import LoomgraphError
from loomgraph.governance import BudgetConfig, InMemoryLedger, StandardBudget
from loomgraph.graph.policies import known_error_type
from loomgraph.models import ScriptedModel
from loomgraph.models.scripted import ScriptExhausted
from loomgraph.protocols import EffectStatus, ModelChunk, ModelRequest, Usage

TWO_CALLS = """
name: two
entry: first
nodes:
  first: {kind: llm, prompt: "{{ input }}", output: output}
  second: {kind: llm, prompt: "again", output: output%s}
edges:
  - {from: first, to: second}
  - {from: second, to: END}
"""


def budget() -> StandardBudget:
    return StandardBudget(BudgetConfig(total_tokens=100_000), InMemoryLedger())


async def charged(spending: StandardBudget) -> Usage:
    spent = (await spending.totals("global")).spent
    keys = ("input_tokens", "output_tokens", "model_calls")
    return Usage(**{k: spent[k] for k in keys if k in spent})


async def test_running_out_of_script_is_a_failed_call_counted_as_charged() -> None:
    spending = budget()
    graph = graph_from_yaml(TWO_CALLS % "")
    agent = Agent("x", model=ScriptedModel(["only one"]), architecture=graph, budget=spending)
    result = await agent.run("q")
    assert result.status == "failed"
    # The user still reads what happened, by its type and message.
    assert "ScriptExhausted" in result.reason
    assert "script of 1 turn(s) exhausted at model call 2" in result.reason
    assert result.usage == await charged(spending) and result.usage.model_calls == 2
    # Journaled as a failed call, as any model error is.
    effects = await agent.deps.runtime.effects(result.run_id)
    calls = [e for e in effects if e.kind == "model"]
    assert [e.status for e in calls] == [EffectStatus.DONE, EffectStatus.FAILED]


async def test_a_retry_policy_still_names_script_exhausted() -> None:
    assert known_error_type("ScriptExhausted") and issubclass(ScriptExhausted, LoomgraphError)
    spending = budget()
    graph = graph_from_yaml(TWO_CALLS % ", retry: {attempts: 2, errors: [ScriptExhausted]}")
    agent = Agent("x", model=ScriptedModel(["only one"]), architecture=graph, budget=spending)
    result = await agent.run("q")
    assert result.status == "failed" and "ScriptExhausted" in result.reason
    # Both attempts of the second node made a call: each charged, each counted.
    assert result.usage == await charged(spending) and result.usage.model_calls == 3


class OwnError(LoomgraphError):
    """An error of a third-party model that happens to derive from loomgraph's root."""


class FailingModel:
    """Streams a little, then fails with its own `LoomgraphError`."""

    name = "failing"

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        yield {"type": "text", "text": "half an answer"}
        raise OwnError("the model's own failure")


async def test_any_loomgraph_error_a_model_raises_is_a_failed_call() -> None:
    spending = budget()
    agent = Agent("x", model=FailingModel(), budget=spending)
    kinds: list[str] = []
    async for event in agent.stream("q"):
        kinds.append(event.kind)
        if event.kind == "run_completed":
            result = event.payload["result"]
    assert result["status"] == "failed" and "OwnError" in result["reason"]
    ledger = await charged(spending)
    assert ledger.model_calls == 1 and ledger.output_tokens > 0  # what it streamed
    assert Usage.from_dict(result["usage"]) == ledger
    assert "output_void" in kinds  # what it streamed was voided at once, as a failure's
