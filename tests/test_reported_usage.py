"""What a model reports it used is outside input: a count that is negative, not finite, not
whole or beyond any one call (`MAX_REPORTED_TOKENS`), or a usage of the wrong type, is a
typed model error and the call is charged its estimate; a model's usage never counts tool
calls; and a charge that was under way when the run was cancelled is finished, never lost."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loomgraph import Agent, tool
from loomgraph.governance import BudgetConfig, Caps, InMemoryLedger, StandardBudget
from loomgraph.governance.ledger import NANO_USD, Decide, Totals
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest, Usage

MODEL = "claude-sonnet-4-5"


class ReportingModel:
    """Answers "ok" and reports `usage` (a dict, a Usage, or anything) as its usage."""

    def __init__(self, usage: Any, *, as_attempt: bool = False) -> None:
        self.name = MODEL
        self.usage, self.as_attempt = usage, as_attempt

    async def stream(self, request: ModelRequest) -> AsyncIterator[dict[str, Any]]:
        if self.as_attempt:
            yield {"type": "attempt", "usage": self.usage, "error": "overloaded"}
        yield {"type": "text", "text": "ok"}
        if not self.as_attempt:
            yield {"type": "usage", "usage": self.usage}
        yield {"type": "finish", "finish_reason": "end_turn"}


def budget(**caps: Any) -> StandardBudget:
    return StandardBudget(BudgetConfig(model=MODEL, **caps))


BAD_USAGE = [
    {"input_tokens": -1000, "output_tokens": -1000},
    {"input_tokens": 10, "cost_usd": -5.0},
    {"input_tokens": math.nan, "cost_usd": 0.01},
    {"output_tokens": math.inf},
    {"input_tokens": 2.7},
    {"tool_calls": -1000},
    Usage(input_tokens=-50),
    Usage(output_tokens=math.nan),  # type: ignore[arg-type]
    "lots",
    # More than any one call can use: charged as reported, it exhausted every cap at once
    # (or overflowed a ledger's integer columns).
    {"input_tokens": 10, "output_tokens": 10**30},
    Usage(cache_read_tokens=10**12),
]


@pytest.mark.parametrize("as_attempt", [False, True], ids=["usage", "attempt"])
@pytest.mark.parametrize("usage", BAD_USAGE, ids=[repr(u)[:40] for u in BAD_USAGE])
async def test_impossible_usage_is_a_model_error_and_the_call_is_still_charged(
    usage: Any, as_attempt: bool
) -> None:
    spending = budget(total_tokens=100_000, model_calls=10)
    agent = Agent("x", model=ReportingModel(usage, as_attempt=as_attempt), budget=spending)
    result = await agent.run("go")
    assert result.status == "failed"
    assert "usage" in result.reason
    totals = await spending.totals("global")
    assert totals.spent["model_calls"] == 1  # the call happened: charged its estimate
    assert totals.spent["total_tokens"] > 0
    assert all(v >= 0 for v in totals.spent.values())
    assert not totals.reserved.get("total_tokens")


async def test_a_models_usage_never_counts_tool_calls() -> None:
    spending = budget(tool_calls=5)
    model = ReportingModel({"input_tokens": 10, "output_tokens": 5, "tool_calls": 3})
    result = await Agent("x", model=model, budget=spending).run("go")
    assert result.status == "completed"
    assert (await spending.totals("global")).spent.get("tool_calls", 0) == 0


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["input_tokens", "output_tokens", "cache_read_tokens", "cost_usd"]),
        st.one_of(st.integers(-(10**6), 10**6), st.floats(allow_nan=True, allow_infinity=True)),
        min_size=1,
    )
)
def test_whatever_a_model_reports_spent_never_goes_down(reported: dict[str, Any]) -> None:
    """The ledger's spend after a call is at least what it was before, whatever was reported."""

    async def call() -> tuple[dict[str, float], dict[str, float]]:
        spending = budget(total_tokens=10**9)
        agent = Agent("x", model=ScriptedModel(["warm"]), budget=spending)
        await agent.run("go")
        before = dict((await spending.totals("global")).spent)
        agent = Agent("x", model=ReportingModel(reported), budget=spending)
        await agent.run("go")
        return before, dict((await spending.totals("global")).spent)

    before, after = asyncio.run(call())
    for metric, value in before.items():
        assert after.get(metric, 0) >= value, (metric, before, after)
    assert all(math.isfinite(v) for v in after.values())


# ---------------------------------------------------------------------------- cancelled settle


class PausingLedger(InMemoryLedger):
    """Holds a settlement (a transaction ending a hold) until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.settling, self.go_on = asyncio.Event(), asyncio.Event()
        self.pause = False

    async def transact(
        self, scopes: Sequence[str], hold_id: str | None, decide: Decide
    ) -> dict[str, Totals]:
        if self.pause and hold_id is not None:
            self.pause = False
            self.settling.set()
            await self.go_on.wait()
        return await super().transact(scopes, hold_id, decide)


async def test_a_run_cancelled_while_its_tool_call_is_charged_is_still_charged() -> None:
    paid: list[str] = []
    ledger = PausingLedger()
    spending = StandardBudget(BudgetConfig(per_user=Caps(tool_calls=1)), ledger)

    @tool
    async def pay() -> str:
        """Pay (a side effect that happened once it returns)."""
        paid.append("paid")
        ledger.pause = True  # the next settlement is this call's
        return "paid"

    turns = [{"tool_calls": [{"tool": "pay", "args": {}}]}, "done"]
    agent = Agent("x", model=ScriptedModel(turns), tools=[pay], budget=spending)
    running = asyncio.create_task(agent.run("go", user_id="bob"))
    await asyncio.wait_for(ledger.settling.wait(), 10)
    running.cancel()
    ledger.go_on.set()
    with pytest.raises(asyncio.CancelledError):
        await running
    totals = await spending.totals("user:bob")
    assert paid == ["paid"] and totals.spent["tool_calls"] == 1
    assert await ledger.holds() == []
    again = Agent("x", model=ScriptedModel(turns), tools=[pay], budget=spending)
    refused = await again.run("again", user_id="bob")
    assert refused.status == "budget_exhausted" and paid == ["paid"]


async def test_a_runs_usage_carries_the_cost_its_ledger_charged() -> None:
    # The model reports tokens but no cost; the budget prices them with the agent's model.
    budget = StandardBudget(BudgetConfig(cost_usd=10.0))
    model = ReportingModel({"input_tokens": 1000, "output_tokens": 500})
    result = await Agent("x", model=model, budget=budget).run("go")
    assert result.status == "completed"
    expected = (1000 * 3.0 + 500 * 15.0) / 1_000_000  # claude-sonnet-4-5's table prices
    assert result.usage.cost_usd == pytest.approx(expected)
    charged = (await budget.totals()).spent["cost_usd"] / NANO_USD
    assert charged == pytest.approx(result.usage.cost_usd, abs=1e-9)


async def test_a_reported_prompt_count_spares_measuring_the_prompt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Measuring the prompt walks the whole conversation, on every turn: done only when the
    # model reported no prompt tokens (its count stands), else a long run pays it squared.
    measured: list[int] = []
    measure = ModelRequest.prompt_chars

    def counted(request: ModelRequest) -> int:
        measured.append(1)
        return measure(request)

    monkeypatch.setattr(ModelRequest, "prompt_chars", counted)
    only_prompt = {"input_tokens": 7}  # no output tokens: the output is estimated
    async with Agent("x", model=ReportingModel(only_prompt)) as agent:
        result = await agent.run("hi")
    assert (result.usage.input_tokens, result.usage.output_tokens > 0) == (7, True)
    assert measured == []
    async with Agent("x", model=ReportingModel({})) as agent:
        result = await agent.run("hi")
    assert measured and result.usage.input_tokens > 0  # none reported: estimated
