"""A model call's `chat` spans, and the token and cost metrics derived from them, report what
each attempt was charged, however it ended: an answer's usage as the budget priced it, a
broken or failed attempt's billed usage, a provider's own retried attempts, a cut-off
attempt's charge. So the metrics add up to the run's usage (and the ledger's)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

from opentelemetry.trace import StatusCode

from loomgraph import Agent
from loomgraph.governance import BudgetConfig, Caps, StandardBudget
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelChunk, ModelError, ModelRequest, Usage
from test_telemetry_status import Traced, attrs
from test_usage_cutoff import StallingModel, bounded, llm_graph

PRICED = "claude-sonnet-4-5"  # in the price table: a budget naming it prices the tokens


def _metric_total(traced: Traced, name: str, **wanted: str) -> float:
    """The sum of a metric's points whose attributes include `wanted` (0 with none)."""
    data = traced.reader.get_metrics_data()
    if data is None:
        return 0.0
    total = 0.0
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    found = dict(point.attributes or {})
                    if all(found.get(k) == v for k, v in wanted.items()):
                        total += getattr(point, "sum", None) or getattr(point, "value", 0)
    return total


def _tokens(traced: Traced, token_type: str) -> float:
    return _metric_total(traced, "gen_ai.client.token.usage", **{"gen_ai.token.type": token_type})


def _chat_spans(traced: Traced) -> list[Any]:
    return [s for s in traced.spans() if s.name.startswith("chat ")]


def _priced_budget() -> StandardBudget:
    return StandardBudget(BudgetConfig(per_user=Caps(cost_usd=5.0), model=PRICED))


# --------------------------------------------------------------------------- cost


async def test_the_cost_a_budget_priced_reaches_the_chat_span_and_the_cost_metric() -> None:
    """A run on a model that reports tokens but no price, under a budget that prices them
    (`BudgetConfig(model=...)`): the run's usage, the ledger and the audit say it cost
    $0.0045, but its `chat` span had no `loom.usage.cost_usd` and `loom.usage.cost` recorded
    nothing, so a cost dashboard built on the metric showed $0. The span and the metric
    carry the cost the run was charged."""
    traced = Traced()
    turn = {"text": "hi", "usage": {"input_tokens": 1000, "output_tokens": 100}}
    agent = Agent(
        "x", model=ScriptedModel([turn]), budget=_priced_budget(), telemetry=traced.telemetry
    )
    result = await agent.run("hi", user_id="u")
    assert result.status == "completed"
    charged = result.usage.cost_usd
    assert charged > 0
    (chat,) = [s for s in traced.spans() if s.name == "chat scripted"]
    assert attrs(chat).get("loom.usage.cost_usd") == charged, attrs(chat)
    assert _metric_total(traced, "loom.usage.cost") == charged


# --------------------------------------------------------------------------- tokens


class BrokenOnce(ScriptedModel):
    """The first attempt reports its prompt's usage, streams a little and breaks (a provider's
    stream cut mid-answer: `retry_step`); the step's retry answers."""

    def __init__(self, turns: list[Any]) -> None:
        super().__init__(turns)
        self.broke = False

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        if not self.broke:
            self.broke = True
            yield {"type": "text", "text": "par"}
            raise ModelError(
                "stream broke", retry_step=True, usage=Usage(input_tokens=1000, output_tokens=3)
            )
        async for chunk in super().stream(request):
            yield chunk


async def test_tokens_billed_by_a_broken_attempt_are_in_the_token_usage_metric() -> None:
    """A model stream broke after the provider billed 1000 prompt tokens; the step was retried
    and answered (1000 more). The run's usage (and the ledger, and the audit) count 2000 input
    tokens, but `gen_ai.client.token.usage` counted 1000: the broken attempt's chat span ended
    in error with no usage attributes. It ends in error with what the attempt billed."""
    traced = Traced()
    turn = {"text": "hello", "usage": {"input_tokens": 1000, "output_tokens": 20}}
    agent = Agent("x", model=BrokenOnce([turn]), telemetry=traced.telemetry)
    result = await agent.run("hi")
    assert result.status == "completed"
    assert result.usage.input_tokens == 2000
    assert _tokens(traced, "input") == result.usage.input_tokens
    assert _tokens(traced, "output") == result.usage.output_tokens
    broken, answered = sorted(_chat_spans(traced), key=lambda s: s.start_time or 0)
    assert broken.status.status_code is StatusCode.ERROR
    assert attrs(broken)["error.type"] == "loomgraph.protocols.models.ModelError"
    assert attrs(broken)["gen_ai.usage.input_tokens"] == 1000
    assert answered.status.status_code is StatusCode.UNSET
    assert attrs(answered)["gen_ai.usage.input_tokens"] == 1000


async def test_a_broken_attempts_priced_cost_is_on_its_span_and_in_the_cost_metric() -> None:
    """The same break under a budget that prices the tokens: each attempt's span carries the
    cost it was charged, and the cost metric adds up to the run's cost."""
    traced = Traced()
    turn = {"text": "hello", "usage": {"input_tokens": 1000, "output_tokens": 20}}
    agent = Agent(
        "x", model=BrokenOnce([turn]), budget=_priced_budget(), telemetry=traced.telemetry
    )
    result = await agent.run("hi", user_id="u")
    assert result.status == "completed"
    costs = [attrs(s)["loom.usage.cost_usd"] for s in _chat_spans(traced)]
    assert len(costs) == 2 and all(cost > 0 for cost in costs), costs
    assert math.isclose(sum(costs), result.usage.cost_usd)
    assert math.isclose(_metric_total(traced, "loom.usage.cost"), result.usage.cost_usd)


class FailsWithUsage:
    """Fails every call for good (no step retry) after the provider billed its prompt."""

    name = "failing"

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        raise ModelError("HTTP 400", status=400, usage=Usage(input_tokens=700))
        yield {"type": "finish"}  # (a generator)


async def test_a_call_that_failed_for_good_counts_what_the_provider_billed() -> None:
    """A call whose provider billed its prompt and then refused it fails the run; what it
    billed is in the run's usage and, from its chat span (an error), in the token metric."""
    traced = Traced()
    agent = Agent("x", model=FailsWithUsage(), telemetry=traced.telemetry)
    result = await agent.run("hi")
    assert result.status == "failed"
    assert result.usage.input_tokens == 700
    (chat,) = _chat_spans(traced)
    assert chat.status.status_code is StatusCode.ERROR
    assert attrs(chat)["gen_ai.usage.input_tokens"] == 700
    assert "gen_ai.usage.output_tokens" not in attrs(chat)  # none billed: none reported
    assert _tokens(traced, "input") == 700
    assert _tokens(traced, "output") == 0


class RetriedByTheProvider:
    """The adapter's own retry: a first request billed (an `attempt` chunk), then the answer."""

    name = "retrying"

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        yield {"type": "attempt", "usage": {"input_tokens": 250}, "error": "overloaded"}
        yield {"type": "text", "text": "ok"}
        yield {"type": "usage", "usage": {"input_tokens": 1000, "output_tokens": 5}}
        yield {"type": "finish", "finish_reason": "end_turn"}


async def test_a_providers_retried_attempt_is_in_its_chat_spans_usage() -> None:
    """An attempt the model's adapter retried itself is charged within the same chat span:
    the span and the metric count it with the answer."""
    traced = Traced()
    agent = Agent("x", model=RetriedByTheProvider(), telemetry=traced.telemetry)
    result = await agent.run("hi")
    assert result.status == "completed"
    assert result.usage.input_tokens == 1250
    (chat,) = _chat_spans(traced)
    assert attrs(chat)["gen_ai.usage.input_tokens"] == 1250
    assert _tokens(traced, "input") == 1250


async def test_a_call_cut_off_by_its_node_timeout_is_in_the_token_metric() -> None:
    """A call its node's time limit cut off mid-stream is charged its prompt and what it
    streamed: its chat span (a cancel, not an error) reports that charge."""
    traced = Traced()
    spending = StandardBudget(BudgetConfig(model=PRICED, total_tokens=1_000_000))
    agent = Agent(
        "x",
        model=StallingModel(),
        architecture=llm_graph(),
        budget=spending,
        telemetry=traced.telemetry,
    )
    result = await bounded(agent.run("q"))
    assert result.status == "failed" and "timeout" in result.reason, result.reason
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    (chat,) = _chat_spans(traced)
    assert chat.status.status_code is StatusCode.UNSET
    assert _tokens(traced, "input") == result.usage.input_tokens
    assert _tokens(traced, "output") == result.usage.output_tokens
    assert math.isclose(_metric_total(traced, "loom.usage.cost"), result.usage.cost_usd)
