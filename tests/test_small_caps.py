"""Model reservations fit small caps: with no max_tokens, the call reserves (and asks the
provider for) no more output than the model's limit, the remaining cap and the default allow;
a cap smaller than the prompt itself is reported as such before any call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fake_servers import FakeServer, Reply, Sleeps, sse_message
from loomgraph import Agent, tool
from loomgraph.governance import BudgetConfig, Caps, StandardBudget
from loomgraph.models import ScriptedModel
from loomgraph.models.anthropic import AnthropicModel
from loomgraph.models.retry import RetryPolicy
from loomgraph.protocols import BudgetExceeded, BudgetScope, ModelRequest, Reservation, Usage


@tool
def lookup(city: str) -> str:
    """Find a city's country."""
    return {"Paris": "France"}.get(city, "unknown")


def turn(i: int) -> dict[str, Any]:
    usage = {"input_tokens": 300, "output_tokens": 200}
    if i < 3:
        return {"tool_calls": [{"tool": "lookup", "args": {"city": "Paris"}}], "usage": usage}
    return {"text": "France", "usage": usage}


async def test_total_tokens_3000_with_500_token_calls_runs_to_the_end() -> None:
    asked: list[int | None] = []

    def script(request: ModelRequest) -> object:
        asked.append(request.max_tokens)
        return turn(request.call_index)

    budget = StandardBudget(BudgetConfig(total_tokens=3000))
    agent = Agent("x", model=ScriptedModel(script), tools=[lookup], budget=budget)
    result = await agent.run("where is Paris?")
    assert result.status == "completed", result.reason
    assert result.usage.total_tokens == 4 * 500
    totals = await budget.totals("global")
    assert totals.spent["total_tokens"] == 2000 and not totals.reserved.get("total_tokens")
    # Each call asked for what was left after the prompt, never the 4096 default.
    assert all(m is not None and m < 3000 for m in asked)
    assert asked == sorted(asked, reverse=True)


async def test_a_cap_smaller_than_the_prompt_is_reported_before_any_call() -> None:
    called: list[int] = []

    def script(request: ModelRequest) -> object:
        called.append(1)
        return "never"

    budget = StandardBudget(BudgetConfig(per_user=Caps(input_tokens=10)))
    agent = Agent("x" * 400, model=ScriptedModel(script), budget=budget)
    result = await agent.run("a prompt of some size", user_id="u")
    assert result.status == "budget_exhausted"
    assert "user:u:input_tokens" in result.reason
    assert "prompt" in result.reason and "smaller than" in result.reason
    assert called == []


async def test_fit_output_takes_the_smallest_limit() -> None:
    scope = BudgetScope(run_id="r", user_id=None)
    budget = StandardBudget(BudgetConfig(output_tokens=1000, default_max_tokens=700))
    assert await budget.fit_output(scope, 50, None) == 700  # the default
    assert await budget.fit_output(scope, 50, 300) == 300  # the model's limit
    unlimited = StandardBudget(BudgetConfig(model_calls=5))
    assert await unlimited.fit_output(scope, 50, None) == 4096  # no token caps
    tight = StandardBudget(BudgetConfig(total_tokens=400))
    assert await tight.fit_output(scope, 150, 4096) == 250  # the rest of the cap
    priced = StandardBudget(BudgetConfig(cost_usd=0.01, model="claude-sonnet-4-6"))
    # $0.01 less a 1000-token prompt at the dearest prompt rate ($3.75/M), at $15/M output
    assert await priced.fit_output(scope, 1000, 4096) == 416


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer().start()
    yield srv
    srv.stop()


async def test_the_fitted_max_tokens_is_what_the_provider_is_asked_for(
    server: FakeServer,
) -> None:
    server.add(Reply(events=sse_message([("text", ["ok"])], input_tokens=20, output_tokens=2)))
    model = AnthropicModel(
        "claude-sonnet-4-6",
        api_key="k",
        base_url=server.url,
        retry_policy=RetryPolicy(sleep=Sleeps()),
    )
    budget = StandardBudget(BudgetConfig(output_tokens=900))
    result = await Agent("x", model=model, budget=budget).run("hi")
    assert result.status == "completed", result.reason
    assert server.bodies[0]["max_tokens"] == 900  # not the adapter's 4096
    totals = await budget.totals("global")
    assert totals.spent["output_tokens"] == 2
    assert Usage(output_tokens=2).output_tokens == totals.spent["output_tokens"]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_default_max_tokens_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="default_max_tokens"):
        BudgetConfig(default_max_tokens=bad)  # type: ignore[arg-type]


async def test_spent_cap_leaves_no_room_is_named_before_the_call() -> None:
    scope = BudgetScope(run_id="r", user_id=None)
    budget = StandardBudget(BudgetConfig(total_tokens=1000))
    reservation = await budget.reserve(
        Reservation(scope, "model", Usage(input_tokens=100, output_tokens=850))
    )
    with pytest.raises(BudgetExceeded, match="leaves no room for output") as info:
        await budget.fit_output(scope, 60, None)
    assert info.value.cap == "global:total_tokens"
    await budget.release(reservation)
    assert await budget.fit_output(scope, 60, None) == 940
