"""Findings on reading model streams (through the official SDKs against the loopback fake
servers, and through the engine with third-party models):

1. a tool call the stream never finished (a `tool_use` block still open at `message_stop`,
   tool-call fragments after `finish_reason`) is a `ModelBadResponse`, never dropped;
2. a completed answer is charged, field by field, the estimate of each count the model did
   not report (output tokens missing or zero although it streamed; no prompt tokens);
3. a malformed chunk (wrong types, missing parts, impossible usage) is a `ModelBadResponse`
   naming what was wrong, never a bare TypeError/AttributeError;
4. a tool-call id repeated within one model turn is an unusable tool call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from fake_servers import FakeServer, Reply, Sleeps, chat_chunk, chat_stream, sse_message
from loomgraph import Agent
from loomgraph.governance import BudgetConfig, StandardBudget
from loomgraph.models import ScriptedModel, Turn
from loomgraph.models.anthropic import AnthropicModel
from loomgraph.models.errors import ModelBadResponse, ModelStreamBroken
from loomgraph.models.openai_compat import OpenAICompatModel
from loomgraph.models.retry import RetryPolicy
from loomgraph.protocols import ModelChunk, ModelError, ModelRequest, Usage
from loomgraph.protocols.pricing import compute_cost
from loomgraph.protocols.usage import estimate_output_tokens

CLAUDE = "claude-sonnet-4-6"


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer().start()
    yield srv
    srv.stop()


def claude(server: FakeServer, *, retries: int = 0, **kw: Any) -> AnthropicModel:
    policy = RetryPolicy(max_retries=retries, sleep=Sleeps())
    return AnthropicModel(CLAUDE, api_key="k", base_url=server.url, retry_policy=policy, **kw)


def local(server: FakeServer, *, retries: int = 0, **kw: Any) -> OpenAICompatModel:
    policy = RetryPolicy(max_retries=retries, sleep=Sleeps())
    return OpenAICompatModel("local", base_url=server.url + "/v1", retry_policy=policy, **kw)


def ask() -> ModelRequest:
    return ModelRequest(messages=[{"role": "user", "content": "hi"}])


async def collect(model: Any) -> list[ModelChunk]:
    return [chunk async for chunk in model.stream(ask())]


async def bad_response(model: Any) -> ModelBadResponse:
    """The ModelBadResponse a stream ends with: raised as it is, or (when part of the answer
    was already handed out) as the cause of the ModelStreamBroken that asks for a step retry."""
    with pytest.raises(ModelError) as info:
        await collect(model)
    err = info.value
    if isinstance(err, ModelStreamBroken):
        assert err.retry_step
        err = err.__cause__  # type: ignore[assignment]
    assert isinstance(err, ModelBadResponse), repr(err)
    return err


# --------------------------------------------------------------------------- Messages API events


def ev(kind: str, **fields: Any) -> Any:
    return (kind, {"type": kind, **fields})


def start(inp: Any = 10, out: Any = 1) -> Any:
    message = {
        "id": "m",
        "type": "message",
        "role": "assistant",
        "model": CLAUDE,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": inp, "output_tokens": out},
    }
    return ev("message_start", message=message)


def text_start(i: int) -> Any:
    return ev("content_block_start", index=i, content_block={"type": "text", "text": ""})


def td(i: int, text: Any) -> Any:
    return ev("content_block_delta", index=i, delta={"type": "text_delta", "text": text})


def tool_start(i: int, call_id: Any = "t1", name: Any = "transfer") -> Any:
    block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
    return ev("content_block_start", index=i, content_block=block)


def jd(i: int, part: Any) -> Any:
    return ev(
        "content_block_delta", index=i, delta={"type": "input_json_delta", "partial_json": part}
    )


def stop(i: int) -> Any:
    return ev("content_block_stop", index=i)


def mdelta(reason: str = "end_turn", usage: Any = None) -> Any:
    fields: dict[str, Any] = {"delta": {"stop_reason": reason, "stop_sequence": None}}
    if usage is not None:
        fields["usage"] = usage
    return ev("message_delta", **fields)


MSTOP = ev("message_stop")
FINAL = sse_message([("text", ["all done"])])


def tc(
    index: int | None, call_id: str | None = None, name: str | None = None, args: str = ""
) -> Any:
    part: dict[str, Any] = {"function": {"arguments": args}}
    if index is not None:
        part["index"] = index
    if call_id is not None:
        part["id"], part["type"] = call_id, "function"
    if name is not None:
        part["function"]["name"] = name
    return chat_chunk({"tool_calls": [part]})


def raw_chunk(**fields: Any) -> Any:
    data = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m", **fields}
    return (None, data)


USAGE = chat_chunk(None, usage={"prompt_tokens": 10, "completion_tokens": 5})
DONE = (None, "[DONE]")


def transfer_agent(model: Any, executed: list[int]) -> Agent:
    async def transfer(amount: int) -> str:
        """Transfer money."""
        executed.append(amount)
        return "done"

    return Agent("x", model=model, tools=[transfer], architecture="react")


# --------------------------------------------------------------------------- 1. unfinished calls


async def test_a_tool_use_block_still_open_at_message_stop_is_a_bad_response(
    server: FakeServer,
) -> None:
    server.add(
        Reply(events=[start(), tool_start(0), jd(0, '{"amount": 5}'), mdelta("tool_use"), MSTOP])
    )
    with pytest.raises(ModelBadResponse, match=r"tool_use block 0 .*never closed") as info:
        await collect(claude(server))
    assert info.value.retryable  # like any bad response: the call may succeed next time


async def test_an_unfinished_tool_call_is_never_dropped_from_a_run(server: FakeServer) -> None:
    # The p18 shape: text, then a tool_use block that is never closed, then message_stop.
    broken = [start(), text_start(0), td(0, "Let me do that."), stop(0)]
    broken += [tool_start(1), jd(1, '{"amount": 5}'), mdelta("tool_use"), MSTOP]
    whole = sse_message([("tool", ("t2", "transfer", ['{"amount": 5}']))], stop_reason="tool_use")
    server.add(Reply(events=broken), Reply(events=whole), Reply(events=FINAL))
    executed: list[int] = []
    agent = transfer_agent(claude(server), executed)
    result = await agent.run("send 5")
    await agent.aclose()
    # The broken answer is retried as a step (text was already streamed), never "completed".
    assert result.status == "completed", result.reason
    assert executed == [5]
    assert result.output == "all done"
    assert len(server.requests) == 3


async def test_an_unfinished_tool_call_that_keeps_coming_fails_the_run(server: FakeServer) -> None:
    broken = [start(), text_start(0), td(0, "Let me do that."), stop(0)]
    broken += [tool_start(1), jd(1, '{"amount": 5}'), mdelta("tool_use"), MSTOP]
    server.add(*[Reply(events=broken) for _ in range(3)])
    executed: list[int] = []
    agent = transfer_agent(claude(server), executed)
    result = await agent.run("send 5")
    await agent.aclose()
    assert result.status == "failed"
    assert "never closed" in result.reason
    assert executed == []


async def test_tool_input_for_a_block_that_is_not_an_open_tool_block_is_a_bad_response(
    server: FakeServer,
) -> None:
    server.add(Reply(events=[start(), jd(4, '{"x": 1}'), stop(4), mdelta("tool_use"), MSTOP]))
    with pytest.raises(ModelBadResponse, match="input_json_delta for block 4"):
        await collect(claude(server))


async def test_tool_call_fragments_after_finish_reason_are_a_bad_response(
    server: FakeServer,
) -> None:
    server.add(
        Reply(
            events=[
                chat_chunk({}, finish="tool_calls"),
                tc(0, "c1", "transfer", '{"amount": 5}'),
                USAGE,
                DONE,
            ]
        )
    )
    with pytest.raises(ModelBadResponse, match="after the finish_reason"):
        await collect(local(server))


async def test_a_late_tool_call_is_never_dropped_from_a_run(server: FakeServer) -> None:
    # The p24 shape: text, finish_reason, then the tool call's fragments, usage, [DONE].
    late = [chat_chunk({"content": "Sending it now."}), chat_chunk({}, finish="tool_calls")]
    late += [tc(0, "c1", "transfer", '{"amount": 5}'), USAGE, DONE]
    server.add(*[Reply(events=late) for _ in range(3)])
    executed: list[int] = []
    agent = transfer_agent(local(server), executed)
    result = await agent.run("send 5")
    await agent.aclose()
    assert result.status == "failed"
    assert "after the finish_reason" in result.reason
    assert executed == []


async def test_usage_and_empty_chunks_after_finish_reason_are_fine(server: FakeServer) -> None:
    server.add(
        Reply(
            events=[
                tc(0, "c1", "transfer", '{"amount": 5}'),
                chat_chunk({}, finish="tool_calls"),
                chat_chunk({"content": ""}),
                USAGE,
                DONE,
            ]
        )
    )
    chunks = await collect(local(server))
    assert [c["type"] for c in chunks] == ["tool_call", "usage", "finish"]


# --------------------------------------------------------------------------- 2. partial usage

TEXT = ["x" * 100] * 100  # 100 deltas, 10,000 characters: about 2,500 tokens
FLOOR = estimate_output_tokens("".join(TEXT), len(TEXT))
PARTIAL = {
    "anthropic: message_delta without usage": (
        claude,
        [start(inp=10, out=1), text_start(0), *[td(0, t) for t in TEXT], stop(0), mdelta(), MSTOP],
    ),
    "anthropic: output_tokens 0": (
        claude,
        [
            start(inp=10, out=0),
            text_start(0),
            *[td(0, t) for t in TEXT],
            stop(0),
            mdelta(usage={"output_tokens": 0}),
            MSTOP,
        ],
    ),
    "openai: usage without completion_tokens": (
        local,
        [
            *[chat_chunk({"content": t}) for t in TEXT],
            chat_chunk({}, finish="stop"),
            chat_chunk(None, usage={"prompt_tokens": 10}),
            DONE,
        ],
    ),
    "openai: no usage at all": (
        local,
        [*[chat_chunk({"content": t}) for t in TEXT], chat_chunk({}, finish="stop"), DONE],
    ),
}


@pytest.mark.parametrize(("make", "events"), PARTIAL.values(), ids=list(PARTIAL))
async def test_a_completed_stream_with_a_partial_usage_report_is_charged_what_it_streamed(
    server: FakeServer, make: Any, events: list[Any]
) -> None:
    server.add(Reply(events=events))
    budget = StandardBudget(BudgetConfig(output_tokens=1_000_000))
    agent = Agent("x", model=make(server), architecture="react", budget=budget)
    result = await agent.run("write")
    await agent.aclose()
    assert result.status == "completed", result.reason
    assert len(str(result.output)) == 10_000
    assert result.usage.output_tokens == FLOOR == 2_500
    assert (await budget.totals("global")).spent["output_tokens"] == FLOOR
    assert result.usage.input_tokens > 0  # the prompt: reported, or its estimate


async def test_a_reported_output_count_stands(server: FakeServer) -> None:
    """The floor is for counts not reported; a reported one is the provider's own."""
    server.add(Reply(events=sse_message([("text", ["x" * 400])], output_tokens=50)))
    agent = Agent("x", model=claude(server), architecture="react")
    result = await agent.run("write")
    await agent.aclose()
    assert result.usage.output_tokens == 50
    assert result.usage.cost_usd == pytest.approx(
        compute_cost(CLAUDE, Usage(input_tokens=10, output_tokens=50))
    )


async def test_a_floored_usage_is_priced_again(server: FakeServer) -> None:
    server.add(Reply(events=PARTIAL["anthropic: message_delta without usage"][1]))
    agent = Agent("x", model=claude(server), architecture="react")
    result = await agent.run("write")  # no budget: the cost is the model's price table's
    await agent.aclose()
    assert result.usage.output_tokens == FLOOR
    assert result.usage.cost_usd == pytest.approx(
        compute_cost(CLAUDE, Usage(input_tokens=10, output_tokens=FLOOR))
    )


class InputOnlyModel:
    """A third-party model that reports its prompt tokens but no output tokens."""

    name = "input-only"

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        yield {"type": "text", "text": "y" * 4000}
        yield {"type": "usage", "usage": Usage(input_tokens=7)}
        yield {"type": "finish", "finish_reason": "end_turn"}


async def test_the_engine_floors_any_models_unreported_output() -> None:
    budget = StandardBudget(BudgetConfig(output_tokens=1_000_000))
    result = await Agent("x", model=InputOnlyModel(), budget=budget).run("write")
    assert result.status == "completed", result.reason
    assert result.usage.input_tokens == 7  # reported: stands
    assert result.usage.output_tokens == 1000
    assert (await budget.totals("global")).spent["output_tokens"] == 1000


# --------------------------------------------------------------------------- 3. malformed chunks

OPENAI_MALFORMED = {
    "two calls, one without index, one with a bad index": [
        tc(0, "c1", "get", '{"a": 1}'),
        raw_chunk(
            choices=[
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": "one", "id": "c2", "function": {}}]},
                    "finish_reason": None,
                }
            ]
        ),
        chat_chunk({}, finish="tool_calls"),
        USAGE,
        DONE,
    ],
    "prompt_tokens is text": [
        chat_chunk({"content": "hi"}),
        chat_chunk({}, finish="stop"),
        chat_chunk(None, usage={"prompt_tokens": "100", "completion_tokens": 5}),
        DONE,
    ],
    "negative usage": [
        chat_chunk({"content": "hi"}),
        chat_chunk({}, finish="stop"),
        chat_chunk(None, usage={"prompt_tokens": 10, "completion_tokens": -500}),
        DONE,
    ],
    "fractional usage": [
        chat_chunk({"content": "hi"}),
        chat_chunk({}, finish="stop"),
        chat_chunk(None, usage={"prompt_tokens": 10.5, "completion_tokens": 5}),
        DONE,
    ],
    "usage is text": [
        chat_chunk({"content": "hi"}),
        chat_chunk({}, finish="stop"),
        raw_chunk(choices=[], usage="lots"),
        DONE,
    ],
    "choices is a number": [raw_chunk(choices=5), DONE],
    "delta is text": [
        raw_chunk(choices=[{"index": 0, "delta": "hi", "finish_reason": "stop"}]),
        USAGE,
        DONE,
    ],
    "tool_calls is not a list": [
        chat_chunk({"tool_calls": {"index": 0}}),
        chat_chunk({}, finish="tool_calls"),
        USAGE,
        DONE,
    ],
    "content is a number": [chat_chunk({"content": 5}), chat_chunk({}, finish="stop"), USAGE, DONE],
    "tool call id is a number": [
        tc(0, None, "get", '{"a": 1}'),
        chat_chunk({"tool_calls": [{"index": 0, "id": 7}]}),
        chat_chunk({}, finish="tool_calls"),
        USAGE,
        DONE,
    ],
    "tool call without a name": [
        tc(0, "c1", None, '{"a": 1}'),
        chat_chunk({}, finish="tool_calls"),
        USAGE,
        DONE,
    ],
    "finish_reason is a number": [
        raw_chunk(choices=[{"index": 0, "delta": {}, "finish_reason": 3}]),
        USAGE,
        DONE,
    ],
}


@pytest.mark.parametrize("events", OPENAI_MALFORMED.values(), ids=list(OPENAI_MALFORMED))
async def test_a_malformed_chat_chunk_is_a_bad_response(
    server: FakeServer, events: list[Any]
) -> None:
    server.add(Reply(events=events))
    err = await bad_response(local(server))
    assert "malformed stream" in str(err) and "request id req_" in str(err)


ANTHROPIC_MALFORMED = {
    "delta without delta": [start(), ev("content_block_delta", index=0), mdelta(), MSTOP],
    "block start without content_block": [
        start(),
        ev("content_block_start", index=0),
        mdelta(),
        MSTOP,
    ],
    "partial_json is a number": [start(), tool_start(0), jd(0, 5), stop(0), mdelta(), MSTOP],
    "text is a number": [start(), text_start(0), td(0, 5), stop(0), mdelta(), MSTOP],
    "negative output usage": [
        start(),
        text_start(0),
        td(0, "hi"),
        stop(0),
        mdelta(usage={"output_tokens": -500}),
        MSTOP,
    ],
    "negative input usage": [start(inp=-1000), text_start(0), td(0, "hi"), stop(0), MSTOP],
    # (The SDK itself turns "100" into 100 and True into 1; what it cannot turn, it passes on.)
    "fractional usage": [
        start(),
        text_start(0),
        td(0, "hi"),
        stop(0),
        mdelta(usage={"output_tokens": 2.5}),
        MSTOP,
    ],
    "usage that is text": [start(inp="lots"), text_start(0), td(0, "hi"), stop(0), MSTOP],
    "tool name is a number": [start(), tool_start(0, name=5), jd(0, "{}"), stop(0), MSTOP],
    "tool id is missing": [start(), tool_start(0, call_id=None), jd(0, "{}"), stop(0), MSTOP],
    "tool block without index": [
        start(),
        ev("content_block_start", content_block={"type": "tool_use", "id": "t", "name": "get"}),
        mdelta("tool_use"),
        MSTOP,
    ],
    "tool input that is not an object": [
        start(),
        ev(
            "content_block_start",
            index=0,
            content_block={"type": "tool_use", "id": "t", "name": "get", "input": "str"},
        ),
        stop(0),
        MSTOP,
    ],
}


@pytest.mark.parametrize("events", ANTHROPIC_MALFORMED.values(), ids=list(ANTHROPIC_MALFORMED))
async def test_a_malformed_messages_event_is_a_bad_response(
    server: FakeServer, events: list[Any]
) -> None:
    server.add(Reply(events=events))
    err = await bad_response(claude(server))
    assert "malformed stream" in str(err) and "request id req_" in str(err)


async def test_a_malformed_chunk_before_any_output_is_retried(server: FakeServer) -> None:
    server.add(
        Reply(events=[raw_chunk(choices=5), DONE]),
        Reply(events=chat_stream(["fine"])),
    )
    chunks = await collect(local(server, retries=1))
    assert [c["type"] for c in chunks] == ["attempt", "text", "usage", "finish"]
    assert "malformed stream" in chunks[0]["error"]


async def test_tool_calls_without_an_index_are_assembled_one_per_id(server: FakeServer) -> None:
    # Gemini's OpenAI-compatible endpoint sends no `index`; arguments may be split.
    server.add(
        Reply(
            events=[
                tc(None, "c1", "get", '{"a"'),
                tc(None, None, None, ": 1}"),
                tc(None, "c2", "get", '{"a": 2}'),
                chat_chunk({}, finish="stop"),
                USAGE,
                DONE,
            ]
        )
    )
    chunks = await collect(local(server))
    calls = [c["call"] for c in chunks if c["type"] == "tool_call"]
    assert calls == [
        {"id": "c1", "tool": "get", "args": {"a": 1}},
        {"id": "c2", "tool": "get", "args": {"a": 2}},
    ]
    assert chunks[-1] == {"type": "finish", "finish_reason": "tool_use"}


# --------------------------------------------------------------------------- 4. duplicate ids


async def test_a_repeated_tool_call_id_in_one_turn_is_an_unusable_call() -> None:
    executed: list[int] = []
    # A Turn plays what a dict turn refuses: a model that repeats an id.
    calls: list[Any] = [
        {"id": "t1", "tool": "transfer", "args": {"amount": 1}},
        {"id": "t1", "tool": "transfer", "args": {"amount": 2}},
    ]
    script = ScriptedModel([Turn(tool_calls=calls), "done"])
    result = await transfer_agent(script, executed).run("go")
    assert result.status == "failed"
    assert "unusable tool call" in result.reason and "'t1'" in result.reason
    assert executed == []


async def test_a_repeated_tool_use_id_is_never_sent_back(server: FakeServer) -> None:
    dup = sse_message(
        [("tool", ("t1", "transfer", ['{"amount": 1}'])), ("tool", ("t1", "transfer", ["{}"]))],
        stop_reason="tool_use",
    )
    server.add(Reply(events=dup), Reply(events=FINAL))
    executed: list[int] = []
    agent = transfer_agent(claude(server), executed)
    result = await agent.run("go")
    await agent.aclose()
    assert result.status == "failed"
    assert executed == []
    assert len(server.requests) == 1  # no request repeating the id went out


async def test_the_same_id_in_a_later_turn_is_fine() -> None:
    executed: list[int] = []
    script = ScriptedModel(
        [
            {"tool_calls": [{"id": "t1", "tool": "transfer", "args": {"amount": 1}}]},
            {"tool_calls": [{"id": "t1", "tool": "transfer", "args": {"amount": 2}}]},
            "done",
        ]
    )
    result = await transfer_agent(script, executed).run("go")
    assert result.status == "completed", result.reason
    assert executed == [1, 2]
