"""Tool arguments from a model are parsed with limits (depth, string size, total size) in the
adapters, before anything else sees them: a 1000-deep nested argument is a typed error, not
RecursionError, and a tool call over the limits is never emitted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from fake_servers import FakeServer, Reply, Sleeps, chat_stream, sse_message
from loomgraph import Agent
from loomgraph.governance import BudgetConfig, StandardBudget
from loomgraph.models.anthropic import AnthropicModel
from loomgraph.models.errors import ModelBadResponse
from loomgraph.models.openai_compat import OpenAICompatModel
from loomgraph.models.retry import RetryPolicy
from loomgraph.protocols import ModelRequest
from loomgraph.protocols.tool_args import (
    ToolArgLimits,
    ToolArgsRejected,
    check_tool_args,
    parse_tool_args,
)

DEEP = '{"a": ' + "[" * 1000 + "]" * 1000 + "}"
HUGE = json.dumps({"text": "x" * 5_000_000})


def test_parse_limits() -> None:
    assert parse_tool_args("") == {}
    assert parse_tool_args('{"a": [1, {"b": "]]]"}]}') == {"a": [1, {"b": "]]]"}]}
    with pytest.raises(ToolArgsRejected, match="nested 1001 deep"):
        parse_tool_args(DEEP)
    with pytest.raises(ToolArgsRejected, match="over the limit of 4000000"):
        parse_tool_args(HUGE + " " * 10)
    limits = ToolArgLimits(max_string_chars=10)
    with pytest.raises(ToolArgsRejected) as info:
        parse_tool_args('{"a": {"b": ["short", "far too long a string"]}}', limits)
    assert info.value.where == "$.a.b[1]"
    with pytest.raises(ToolArgsRejected, match="not an object"):
        parse_tool_args("[1, 2]")
    with pytest.raises(ToolArgsRejected, match="not valid JSON"):
        parse_tool_args('{"a": ')
    for constant in ("NaN", "Infinity", "-Infinity"):  # Python's decoder reads them
        with pytest.raises(ToolArgsRejected, match="no JSON number") as info:
            parse_tool_args(f'{{"a": {{"b": {constant}}}}}')
        assert info.value.where == "$.a.b"
    nested: Any = {}
    for _ in range(100):
        nested = {"n": nested}
    with pytest.raises(ToolArgsRejected, match="deeper than"):
        check_tool_args(nested)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer().start()
    yield srv
    srv.stop()


def _policy() -> RetryPolicy:
    return RetryPolicy(max_retries=0, sleep=Sleeps())


def _anthropic_reply(args: str) -> Reply:
    parts = [args[i : i + 65536] for i in range(0, len(args), 65536)]
    return Reply(events=sse_message([("tool", ("tu_1", "echo", parts))], stop_reason="tool_use"))


def _openai_reply(args: str) -> Reply:
    parts = [args[i : i + 65536] for i in range(0, len(args), 65536)]
    return Reply(events=chat_stream(tools=[("call_1", "echo", parts)], finish="tool_calls"))


CASES = [
    pytest.param(
        lambda url: AnthropicModel("claude-sonnet-4-6", api_key="k", base_url=url,
                                   retry_policy=_policy()),
        _anthropic_reply,
        id="anthropic",
    ),
    pytest.param(
        lambda url: OpenAICompatModel("local", api_key="k", base_url=url, retry_policy=_policy()),
        _openai_reply,
        id="openai-compat",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("make", "reply"), CASES)
@pytest.mark.parametrize(("args", "words"), [(DEEP, "nested 1001 deep"), (HUGE, "characters")])
async def test_adapter_rejects_arguments_over_the_limits(
    server: FakeServer, make: Any, reply: Any, args: str, words: str
) -> None:
    server.add(reply(args))
    chunks = []
    with pytest.raises(ModelBadResponse) as info:
        async for chunk in make(server.url).stream(
            ModelRequest(messages=[{"role": "user", "content": "go"}])
        ):
            chunks.append(chunk)
    assert [c for c in chunks if c["type"] == "tool_call"] == []  # never emitted
    assert info.value.error_type == "tool_args_rejected"
    assert words in str(info.value)


# ---------------------------------------------------------------------------- any model


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


class CallingModel:
    """A model of its own (not a provider adapter) that hands over `call` as a tool call."""

    name = "claude-sonnet-4-5"

    def __init__(self, call: Any) -> None:
        self.call = call

    async def stream(self, request: ModelRequest) -> Any:
        yield {"type": "tool_call", "call": self.call}
        yield {"type": "finish", "finish_reason": "tool_use"}


UNUSABLE = [
    ({"id": "c1", "tool": "add", "args": {"a": deep(2000)}}, "nested deeper"),
    ({"id": "c1", "tool": "add", "args": "a=1"}, "not an object"),
    ({"id": "c1", "args": {}}, "a `tool` name"),
    ({"id": 7, "tool": "add", "args": {}}, "an `id`"),
    ("add(1, 2)", "a tool call is a mapping"),
    # No JSON number: no journal could keep the call (in memory such a run went on, on
    # SQLite it failed when the answer was journaled).
    ({"id": "c1", "tool": "add", "args": {"a": float("nan")}}, "$.a: nan is no JSON number"),
    ({"id": "c1", "tool": "add", "args": {"a": [1.0, float("-inf")]}}, "-inf is no JSON"),
]


@pytest.mark.parametrize(("call", "named"), UNUSABLE, ids=[n for _, n in UNUSABLE])
async def test_any_models_unusable_tool_call_is_a_typed_failure_and_charged(
    call: Any, named: str
) -> None:
    spending = StandardBudget(BudgetConfig(model="claude-sonnet-4-5", model_calls=5))
    result = await Agent("x", model=CallingModel(call), budget=spending).run("go")
    assert result.status == "failed"
    assert "unusable tool call" in result.reason and named in result.reason
    assert "RecursionError" not in result.reason
    totals = await spending.totals("global")
    assert totals.spent["model_calls"] == 1 and not totals.reserved.get("model_calls")
