"""Every model attempt is charged for what it billed and journaled; a failed run counts it.

Against the loopback fake servers (through the official SDKs): an attempt that failed after
the provider started billing (Anthropic's `overloaded_error` after `message_start`, an
OpenAI-compatible stream dropped after its first chunk) and that the adapter retries is
charged before the retry is sent, under a reservation of its own, and journaled as a
`model_attempt` effect; the run's usage counts it. A run that fails on its last model step
after billing has that usage in `RunResult.usage`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fake_servers import FakeServer, Reply, Sleeps, chat_stream, sse_error, sse_message
from loomgraph import Agent
from loomgraph.governance import BudgetConfig, StandardBudget
from loomgraph.models.anthropic import AnthropicModel
from loomgraph.models.openai_compat import OpenAICompatModel
from loomgraph.models.retry import RetryPolicy
from loomgraph.protocols import ModelError, ModelRequest, Usage

PROMPT = "what is the weather like " * 10


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer().start()
    yield srv
    srv.stop()


def _policy() -> RetryPolicy:
    return RetryPolicy(max_retries=3, base_delay=0.1, sleep=Sleeps())


def anthropic(server: FakeServer) -> AnthropicModel:
    return AnthropicModel(
        "claude-sonnet-4-6", api_key="k", base_url=server.url, retry_policy=_policy()
    )


def openai(server: FakeServer) -> OpenAICompatModel:
    return OpenAICompatModel("local", api_key="k", base_url=server.url, retry_policy=_policy())


def overloaded_anthropic() -> Reply:
    # Billed the prompt (message_start says so), then overloaded before any text: retried.
    start = sse_message([], input_tokens=200)[:2]
    return Reply(events=[*start, sse_error("overloaded_error")])


def whole_anthropic() -> Reply:
    return Reply(events=sse_message([("text", ["done"])], input_tokens=200, output_tokens=2))


def dropped_openai() -> Reply:
    # The role chunk came (no content, nothing handed out), then the connection dropped.
    return Reply(events=chat_stream(["x"], prompt_tokens=200), cut_after=1)


def whole_openai() -> Reply:
    return Reply(events=chat_stream(["done"], prompt_tokens=200, completion_tokens=2))


CASES = [
    pytest.param(anthropic, overloaded_anthropic, whole_anthropic, id="anthropic"),
    pytest.param(openai, dropped_openai, whole_openai, id="openai-compat"),
]


@pytest.mark.parametrize(("make", "failing", "whole"), CASES)
async def test_each_provider_retry_is_charged_and_journaled(
    server: FakeServer, make: Any, failing: Any, whole: Any
) -> None:
    server.add(failing(), failing(), whole())
    budget = StandardBudget(BudgetConfig(input_tokens=100_000, output_tokens=100_000))
    agent = Agent("be brief", model=make(server), budget=budget)
    result = await agent.run(PROMPT)
    assert result.status == "completed", result.reason
    assert len(server.requests) == 3
    totals = await budget.totals("global")
    # Three attempts, each billed at least the prompt; all charged, nothing left reserved.
    assert totals.spent["input_tokens"] >= 3 * 60
    assert totals.spent["model_calls"] == 3
    assert not totals.reserved
    assert result.usage.prompt_tokens == totals.spent["input_tokens"]
    assert result.usage.model_calls == 1 and result.turns == 1  # one call, three attempts
    effects = await agent.deps.runtime.effects(result.run_id)
    attempts = [e for e in effects if e.kind == "model_attempt"]
    assert [e.status for e in attempts] == ["failed", "failed"]
    assert [e.outcome["attempt"] for e in attempts if e.outcome] == [1, 2]
    billed = sum((Usage.from_dict(e.outcome["usage"]) for e in attempts if e.outcome), Usage())
    assert billed.prompt_tokens >= 2 * 60
    assert all(e.key.endswith((".attempt1", ".attempt2")) for e in attempts)


async def test_a_retry_that_no_longer_fits_is_not_sent(server: FakeServer) -> None:
    # Room for one attempt's worst case (prompt + 100 output) but not for a second one
    # after the first billed its prompt: the run stops on the cap, the retry is never sent.
    server.add(overloaded_anthropic(), whole_anthropic())
    budget = StandardBudget(BudgetConfig(input_tokens=250))
    model = anthropic(server)
    model.max_tokens = 100
    agent = Agent("be brief", model=model, budget=budget)
    result = await agent.run(PROMPT)
    assert result.status == "budget_exhausted", result.reason
    assert "input_tokens" in result.reason
    assert len(server.requests) == 1
    totals = await budget.totals("global")
    assert totals.spent["input_tokens"] == 200  # the billed attempt, charged
    assert totals.committed("input_tokens") <= 250
    # The run's usage counts the call made, as the ledger does (it counted none: governance.md
    # "a cap refused its retry after attempts were billed … is counted by the engine").
    assert result.usage.model_calls == totals.spent["model_calls"] == 1
    assert result.usage.input_tokens == 200


class _Failing:
    """A third-party model: streams text, then fails without usage, every time."""

    name = "failing"

    def __init__(self, deltas: int) -> None:
        self.deltas = deltas
        self.calls = 0

    async def stream(self, request: ModelRequest) -> Any:
        self.calls += 1
        for _ in range(self.deltas):
            yield {"type": "text", "text": "t"}
        raise ModelError("connection dropped", retry_step=True)


async def test_the_step_a_run_fails_on_is_in_its_usage() -> None:
    model = _Failing(deltas=50)
    budget = StandardBudget(BudgetConfig(output_tokens=100_000))
    agent = Agent("be brief", model=model, budget=budget)
    result = await agent.run(PROMPT)
    assert result.status == "failed"
    assert model.calls == 3  # the call and its two step retries
    totals = await budget.totals("global")
    assert totals.spent["output_tokens"] >= 150
    # The failed step wrote no state, yet what it billed is the run's usage.
    assert result.usage.output_tokens == totals.spent["output_tokens"]
    assert result.usage.prompt_tokens == totals.spent["input_tokens"]
    stored = await agent.deps.runtime.load_run(result.run_id)
    assert stored is not None and stored.result is not None
    assert stored.result["usage"]["output_tokens"] == result.usage.output_tokens


async def test_the_step_a_run_fails_on_is_counted_without_a_budget() -> None:
    result = await Agent("be brief", model=_Failing(deltas=8)).run(PROMPT)
    assert result.status == "failed"
    assert result.usage.output_tokens >= 3 * 8
