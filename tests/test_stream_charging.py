"""A stream cut before the provider's usage arrives is still charged for what was streamed.

Through the official SDKs against the loopback fake servers: 300 one-token text deltas, then
the connection drops. The adapter's `ModelStreamBroken.usage`, the budget's ledger and the
run's usage all count at least 300 output tokens (and the prompt).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fake_servers import FakeServer, Reply, Sleeps, chat_stream, sse_message
from loomgraph import Agent
from loomgraph.governance import BudgetConfig, Caps, StandardBudget
from loomgraph.models.anthropic import AnthropicModel
from loomgraph.models.errors import ModelStreamBroken
from loomgraph.models.openai_compat import OpenAICompatModel
from loomgraph.models.retry import RetryPolicy
from loomgraph.protocols import ModelError, ModelRequest, Usage
from loomgraph.protocols.usage import estimate_output_tokens

DELTAS = 300
PROMPT = "tell me a long story " * 40  # 840 characters: about 210 prompt tokens


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer().start()
    yield srv
    srv.stop()


def _policy() -> RetryPolicy:
    return RetryPolicy(max_retries=2, base_delay=0.1, sleep=Sleeps())


def anthropic(server: FakeServer) -> AnthropicModel:
    return AnthropicModel(
        "claude-sonnet-4-6", api_key="k", base_url=server.url, retry_policy=_policy()
    )


def openai(server: FakeServer) -> OpenAICompatModel:
    return OpenAICompatModel("local", api_key="k", base_url=server.url, retry_policy=_policy())


def cut_anthropic() -> Reply:
    # message_start reports 1 output token; the message_delta with the real count never comes.
    events = sse_message([("text", ["tok "] * DELTAS)], input_tokens=200, output_tokens=DELTAS)
    return Reply(events=events, cut_after=3 + DELTAS)  # start, ping, block start, the deltas


def cut_openai() -> Reply:
    items = chat_stream(["tok "] * DELTAS, prompt_tokens=200, completion_tokens=DELTAS)
    return Reply(events=items, cut_after=1 + DELTAS)  # role chunk + the deltas; no usage


def whole_anthropic() -> Reply:
    return Reply(events=sse_message([("text", ["done"])], input_tokens=200, output_tokens=2))


def whole_openai() -> Reply:
    return Reply(events=chat_stream(["done"], prompt_tokens=200, completion_tokens=2))


CASES = [
    pytest.param(anthropic, cut_anthropic, whole_anthropic, id="anthropic"),
    pytest.param(openai, cut_openai, whole_openai, id="openai-compat"),
]


def test_estimate_rule() -> None:
    assert estimate_output_tokens("", 0) == 0
    assert estimate_output_tokens("x" * 40, 3) == 10  # ~4 characters a token
    assert estimate_output_tokens("ab" * 3, 300) == 300  # never below the deltas received


@pytest.mark.parametrize(("make", "cut", "whole"), CASES)
async def test_adapter_reports_what_was_streamed(
    server: FakeServer, make: Any, cut: Any, whole: Any
) -> None:
    server.add(cut())
    request = ModelRequest(messages=[{"role": "user", "content": PROMPT}])
    with pytest.raises(ModelStreamBroken) as info:
        async for _ in make(server).stream(request):
            pass
    usage = info.value.usage
    assert usage.output_tokens >= DELTAS
    assert usage.prompt_tokens >= 200  # reported by message_start, or the prompt's estimate


@pytest.mark.parametrize(("make", "cut", "whole"), CASES)
async def test_cut_stream_is_charged_to_the_budget_and_the_run(
    server: FakeServer, make: Any, cut: Any, whole: Any
) -> None:
    server.add(cut(), whole())
    budget = StandardBudget(BudgetConfig(output_tokens=100_000))
    agent = Agent("be brief", model=make(server), budget=budget)
    result = await agent.run(PROMPT)
    assert result.status == "completed", result.reason
    totals = await budget.totals("global")
    assert totals.spent["output_tokens"] >= DELTAS + 2
    assert not totals.reserved.get("output_tokens")
    assert result.usage.output_tokens >= DELTAS + 2
    assert result.usage.model_calls >= 1
    assert result.usage == result.usage + Usage()  # sanity: a plain Usage


@pytest.mark.parametrize(("make", "cut", "whole"), CASES)
async def test_cut_stream_that_ends_the_run_is_still_charged(
    server: FakeServer, make: Any, cut: Any, whole: Any
) -> None:
    server.add(cut(), cut(), cut())  # every step retry breaks too
    budget = StandardBudget(BudgetConfig(per_user=Caps(output_tokens=100_000)))
    agent = Agent("be brief", model=make(server), budget=budget)
    result = await agent.run(PROMPT, user_id="u")
    assert result.status == "failed"
    totals = await budget.totals("user:u")
    assert totals.spent["output_tokens"] >= 3 * DELTAS
    assert not totals.reserved.get("output_tokens")


class _CutModel:
    """A third-party model that streams DELTAS text chunks, then breaks without usage."""

    name = "cut-model"

    def __init__(self, cuts: int) -> None:
        self.cuts = cuts

    async def stream(self, request: ModelRequest) -> Any:
        if self.cuts > 0:
            self.cuts -= 1
            for _ in range(DELTAS):
                yield {"type": "text", "text": "t"}
            raise ModelError("connection dropped", retry_step=True)
        yield {"type": "text", "text": "done"}
        yield {"type": "usage", "usage": Usage(input_tokens=5, output_tokens=1)}
        yield {"type": "finish", "finish_reason": "end_turn"}


async def test_engine_charges_a_model_that_reports_nothing() -> None:
    budget = StandardBudget(BudgetConfig(output_tokens=100_000, input_tokens=100_000))
    agent = Agent("be brief", model=_CutModel(cuts=1), budget=budget)
    result = await agent.run(PROMPT)
    assert result.status == "completed", result.reason
    totals = await budget.totals("global")
    assert totals.spent["output_tokens"] >= DELTAS + 1
    assert totals.spent["input_tokens"] >= len(PROMPT) // 4
    assert result.usage.output_tokens >= DELTAS + 1  # the broken attempt is in the run's usage


class _RaisingModel:
    """A third-party model whose stream raises something other than a ModelError (a bug, an
    SDK error it does not translate) after streaming DELTAS text chunks."""

    name = "raising-model"

    async def stream(self, request: ModelRequest) -> Any:
        for _ in range(DELTAS):
            yield {"type": "text", "text": "t"}
        raise RuntimeError("connection reset")


async def test_a_model_raising_another_error_is_a_failed_call_like_any_other(
    tmp_path: Any,
) -> None:
    from loomgraph.observability import FileAuditLog

    budget = StandardBudget(BudgetConfig(per_user=Caps(model_calls=10)))
    log = FileAuditLog(tmp_path / "audit.jsonl", key=b"k" * 32)
    agent = Agent("be brief", model=_RaisingModel(), budget=budget, audit_log=log)
    result = await agent.run(PROMPT, user_id="u")
    assert result.status == "failed"
    assert "RuntimeError: connection reset" in result.reason
    spent = (await budget.totals("user:u")).spent
    # The ledger and the run's usage say the same: one call, the prompt and what streamed.
    assert result.usage.model_calls == spent["model_calls"] == 1
    assert result.usage.output_tokens == spent["output_tokens"] >= DELTAS
    actions = [entry["action"] for entry in log.entries()]
    assert "model_call" in actions


class _SilentModel:
    """A third-party model that answers in full but never reports its usage."""

    name = "silent-model"

    async def stream(self, request: ModelRequest) -> Any:
        yield {"type": "text", "text": "t" * DELTAS}
        yield {"type": "finish", "finish_reason": "end_turn"}


async def test_an_answer_without_usage_is_charged_what_it_streamed() -> None:
    budget = StandardBudget(BudgetConfig(output_tokens=100_000, input_tokens=100_000))
    agent = Agent("be brief", model=_SilentModel(), budget=budget)
    result = await agent.run(PROMPT)
    assert result.status == "completed", result.reason
    spent = (await budget.totals("global")).spent
    assert spent["output_tokens"] >= estimate_output_tokens("t" * DELTAS, 1)
    assert spent["input_tokens"] >= len(PROMPT) // 4
    assert result.usage.output_tokens == spent["output_tokens"]
