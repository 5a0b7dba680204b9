"""AnthropicModel: the real `anthropic` SDK against a scripted loopback Messages API."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from fake_servers import FakeServer, Reply, Sleeps, api_error, assemble, sse_error, sse_message
from loomgraph.models.anthropic import AnthropicModel
from loomgraph.models.errors import (
    ModelAuthError,
    ModelBadResponse,
    ModelConnectionError,
    ModelMissingKey,
    ModelOverloaded,
    ModelPromptTooLarge,
    ModelQuotaExhausted,
    ModelRateLimited,
    ModelRequestError,
    ModelServerError,
    ModelStreamBroken,
    ModelTimeout,
)
from loomgraph.models.retry import RetryPolicy
from loomgraph.protocols import Message, ModelChunk, ModelError, ModelRequest, ToolSpec, Usage
from loomgraph.protocols.pricing import Price, compute_cost, price_for

MODEL = "claude-sonnet-4-6"


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer().start()
    yield srv
    srv.stop()


def make(
    server: FakeServer, *, retries: int = 4, sleeps: Sleeps | None = None, **kw: Any
) -> AnthropicModel:
    policy = RetryPolicy(max_retries=retries, base_delay=0.1, sleep=sleeps or Sleeps())
    return AnthropicModel(MODEL, api_key="test-key", base_url=server.url, retry_policy=policy, **kw)


def ask(text: str = "hi", **kw: Any) -> ModelRequest:
    return ModelRequest(messages=[{"role": "user", "content": text}], **kw)


async def collect(model: AnthropicModel, request: ModelRequest) -> list[ModelChunk]:
    return [chunk async for chunk in model.stream(request)]


TOOLS: list[ToolSpec] = [
    {
        "name": "add",
        "description": "Add two numbers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        },
    },
    {"name": "div", "description": "Divide.", "parameters": {"type": "object"}},
]


# --------------------------------------------------------------------------- mapping


async def test_react_turns_with_parallel_tool_calls_and_tool_errors(server: FakeServer) -> None:
    server.add(
        Reply(
            events=sse_message(
                [
                    ("text", ["Let me ", "compute."]),
                    ("tool", ("tu_1", "add", ['{"a": 2,', ' "b": 3}'])),
                    ("tool", ("tu_2", "div", ['{"a": 1, "b": 0}'])),
                ],
                stop_reason="tool_use",
            )
        ),
        Reply(events=sse_message([("text", ["5, and 1/0 is undefined."])])),
    )
    model = make(server, temperature=0.2)
    history: list[Message] = [{"role": "user", "content": "2+3 and 1/0?"}]
    first = assemble(await collect(model, ModelRequest(history, system="Be exact.", tools=TOOLS)))
    assert first.text == "Let me compute."
    assert first.tool_calls == [
        {"id": "tu_1", "tool": "add", "args": {"a": 2, "b": 3}},
        {"id": "tu_2", "tool": "div", "args": {"a": 1, "b": 0}},
    ]
    assert first.finish_reason == "tool_use"

    history.append(first.to_message())
    history.append({"role": "tool", "tool_call_id": "tu_1", "name": "add", "content": "5"})
    history.append(
        {
            "role": "tool",
            "tool_call_id": "tu_2",
            "name": "div",
            "content": "ZeroDivisionError",
            "is_error": True,
        }
    )
    second = assemble(
        await collect(model, ModelRequest(history, system="Be exact.", tools=TOOLS, max_tokens=321))
    )
    assert second.text == "5, and 1/0 is undefined."
    assert second.finish_reason == "end_turn"

    body = server.bodies[1]
    assert body["model"] == MODEL
    assert body["max_tokens"] == 321
    assert server.bodies[0]["max_tokens"] == 4096
    assert body["temperature"] == 0.2
    assert body["stream"] is True
    assert body["system"] == "Be exact."
    assert "tool_choice" not in body
    assert body["tools"] == [
        {"name": "add", "description": "Add two numbers.", "input_schema": TOOLS[0]["parameters"]},
        {"name": "div", "description": "Divide.", "input_schema": {"type": "object"}},
    ]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "2+3 and 1/0?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me compute."},
                {"type": "tool_use", "id": "tu_1", "name": "add", "input": {"a": 2, "b": 3}},
                {"type": "tool_use", "id": "tu_2", "name": "div", "input": {"a": 1, "b": 0}},
            ],
        },
        # both results grouped into ONE user turn, in call order
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "tu_1", "content": "5", "is_error": False},
                {
                    "type": "tool_result",
                    "tool_use_id": "tu_2",
                    "content": "ZeroDivisionError",
                    "is_error": True,
                },
            ],
        },
    ]


async def test_forced_tool_choice_and_empty_tool_input(server: FakeServer) -> None:
    server.add(
        Reply(events=sse_message([("tool", ("tu_9", "answer", []))], stop_reason="tool_use"))
    )
    chunks = await collect(make(server), ask(tools=TOOLS, tool_choice="answer"))
    assert server.bodies[0]["tool_choice"] == {"type": "tool", "name": "answer"}
    assert assemble(chunks).tool_calls == [{"id": "tu_9", "tool": "answer", "args": {}}]


@pytest.mark.parametrize("stop", ["end_turn", "tool_use", "max_tokens", "stop_sequence", "refusal"])
async def test_stop_reasons_map_to_finish_reasons(server: FakeServer, stop: str) -> None:
    server.add(Reply(events=sse_message([("text", ["x"])], stop_reason=stop)))
    chunks = await collect(make(server), ask())
    assert chunks[-1] == {"type": "finish", "finish_reason": stop}
    assert [c["type"] for c in chunks] == ["text", "usage", "finish"]


# --------------------------------------------------------------------------- streaming


async def test_text_streams_in_order_as_it_arrives(server: FakeServer) -> None:
    gate = threading.Event()
    events = sse_message([("text", ["one ", "two ", "three"])])
    first_delta = next(i for i, e in enumerate(events) if e[0] == "content_block_delta")
    # The server holds the rest of the stream until the test has seen the first delta.
    events.insert(first_delta + 1, gate)
    server.add(Reply(events=events))
    stream = make(server).stream(ask())
    try:
        assert await anext(stream) == {"type": "text", "text": "one "}
    finally:
        gate.set()
    rest = [chunk async for chunk in stream]
    assert [c.get("text") for c in rest if c["type"] == "text"] == ["two ", "three"]


async def test_usage_and_cost_reported(server: FakeServer) -> None:
    server.add(
        Reply(
            events=sse_message(
                [("text", ["hi"])],
                input_tokens=1000,
                output_tokens=200,
                cache_read=3000,
                cache_write=400,
            )
        )
    )
    usage = assemble(await collect(make(server), ask())).usage
    assert usage.input_tokens == 1000
    assert usage.output_tokens == 200  # message_delta's cumulative count wins
    assert usage.cache_read_tokens == 3000
    assert usage.cache_write_tokens == 400
    expected = (1000 * 3 + 200 * 15 + 400 * 3.75 + 3000 * 0.3) / 1e6
    assert usage.cost_usd == pytest.approx(expected)


def test_price_table() -> None:
    million: Usage = Usage(
        input_tokens=10**6, output_tokens=10**6, cache_write_tokens=10**6, cache_read_tokens=10**6
    )
    assert compute_cost("claude-sonnet-4-5-20250929", million) == pytest.approx(3 + 15 + 3.75 + 0.3)
    assert price_for("claude-opus-4-5-20251101") == Price(5.0, 25.0, 6.25, 0.5)
    assert price_for("claude-opus-4-1-20250805") == Price(15.0, 75.0, 18.75, 1.5)
    assert price_for("claude-opus-4-7") == Price(5.0, 25.0, 6.25, 0.5)  # longest prefix wins
    assert price_for("claude-sonnet-5-5") == Price(2.0, 10.0, 2.5, 0.1)
    assert compute_cost("llama3.1:8b", million) == 0.0
    assert compute_cost("llama3.1:8b", million, {"llama": Price(1, 1)}) == pytest.approx(2.0)
    assert compute_cost(MODEL, million, lambda model, usage: 42.0) == 42.0


async def test_price_override_on_the_model(server: FakeServer) -> None:
    server.add(Reply(events=sse_message([("text", ["hi"])], input_tokens=10**6, output_tokens=0)))
    model = make(server, prices={"claude-sonnet-4-6": Price(input=1.0, output=2.0)})
    assert assemble(await collect(model, ask())).usage.cost_usd == pytest.approx(1.0)


async def test_prompt_caching_breakpoints(server: FakeServer) -> None:
    server.add(Reply(events=sse_message([("text", ["ok"])])))
    await collect(make(server, prompt_caching=True), ask(system="You are terse.", tools=TOOLS))
    body = server.bodies[0]
    assert body["system"] == [
        {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}
    ]
    assert "cache_control" not in body["tools"][0]
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}


async def test_no_cache_markers_without_prompt_caching(server: FakeServer) -> None:
    server.add(Reply(events=sse_message([("text", ["ok"])])))
    await collect(make(server), ask(system="You are terse.", tools=TOOLS))
    assert "cache_control" not in str(server.bodies[0])


# --------------------------------------------------------------------------- retries


RETRIED = [
    (429, "rate_limit_error", ModelRateLimited),
    (529, "overloaded_error", ModelOverloaded),
    (500, "api_error", ModelServerError),
    (502, "api_error", ModelServerError),
    (503, "api_error", ModelServerError),
    (504, "timeout_error", ModelServerError),
]


@pytest.mark.parametrize(("status", "etype", "cls"), RETRIED)
async def test_retried_status_then_success(
    server: FakeServer, status: int, etype: str, cls: type[ModelError]
) -> None:
    server.add(
        api_error(status, etype),
        api_error(status, etype),
        Reply(events=sse_message([("text", ["fine"])])),
    )
    sleeps = Sleeps()
    response = assemble(await collect(make(server, sleeps=sleeps), ask()))
    assert response.text == "fine"
    assert len(server.requests) == 3
    # exponential backoff with jitter: retry n waits within [base*2^n/2, base*2^n]
    assert 0.05 <= sleeps.delays[0] <= 0.1
    assert 0.1 <= sleeps.delays[1] <= 0.2
    assert all(r.headers.get("x-stainless-retry-count") in (None, "0") for r in server.requests)


@pytest.mark.parametrize(("status", "etype", "cls"), RETRIED)
async def test_retried_status_gives_up_with_typed_error(
    server: FakeServer, status: int, etype: str, cls: type[ModelError]
) -> None:
    server.add(*[api_error(status, etype) for _ in range(3)])
    with pytest.raises(cls) as info:
        await collect(make(server, retries=2), ask())
    assert len(server.requests) == 3
    assert info.value.status == status
    assert info.value.request_id == "req_003"
    assert f"HTTP {status}" in str(info.value)
    assert "req_003" in str(info.value)
    assert "3 attempts" in str(info.value)


async def test_429_honours_retry_after(server: FakeServer) -> None:
    server.add(
        api_error(429, "rate_limit_error", retry_after="7"),
        Reply(events=sse_message([("text", ["ok"])])),
    )
    sleeps = Sleeps()
    await collect(make(server, sleeps=sleeps), ask())
    assert sleeps.delays == [7.0]


@pytest.mark.parametrize(
    ("status", "etype", "cls"),
    [
        (400, "invalid_request_error", ModelRequestError),
        (401, "authentication_error", ModelAuthError),
        (403, "permission_error", ModelAuthError),
        (404, "not_found_error", ModelRequestError),
        (413, "request_too_large", ModelPromptTooLarge),
    ],
)
async def test_client_errors_are_not_retried(
    server: FakeServer, status: int, etype: str, cls: type[ModelError]
) -> None:
    server.add(
        api_error(status, etype, "you did it wrong"),
        Reply(events=sse_message([("text", ["never"])])),
    )
    sleeps = Sleeps()
    with pytest.raises(cls) as info:
        await collect(make(server, sleeps=sleeps), ask())
    assert len(server.requests) == 1
    assert sleeps.delays == []
    assert info.value.status == status
    assert info.value.request_id == "req_001"
    message = str(info.value)
    assert f"HTTP {status}" in message and "req_001" in message
    assert etype in message and "you did it wrong" in message


async def test_dropped_connection_before_any_event_is_retried(server: FakeServer) -> None:
    server.add(
        Reply(events=sse_message([("text", ["lost"])]), cut_after=0),
        Reply(events=sse_message([("text", ["ok"])])),
    )
    assert assemble(await collect(make(server), ask())).text == "ok"
    assert len(server.requests) == 2


async def test_connection_refused_is_retried_then_typed() -> None:
    srv = FakeServer()  # bound to a port but never serving: nothing answers
    srv.httpd.server_close()
    sleeps = Sleeps()
    with pytest.raises(ModelConnectionError):
        await collect(make(srv, retries=2, sleeps=sleeps), ask())
    assert len(sleeps.delays) == 2


async def test_timeout_is_retried(server: FakeServer) -> None:
    hold = threading.Event()
    server.add(
        Reply(events=sse_message([("text", ["late"])]), hold=hold),
        Reply(events=sse_message([("text", ["ok"])])),
    )
    try:
        model = make(server, timeout=0.2)
        assert assemble(await collect(model, ask())).text == "ok"
    finally:
        hold.set()
    assert len(server.requests) == 2


async def test_timeout_gives_up_as_model_timeout(server: FakeServer) -> None:
    hold = threading.Event()
    server.add(Reply(events=sse_message([("text", ["late"])]), hold=hold))
    try:
        with pytest.raises(ModelTimeout):
            await collect(make(server, retries=0, timeout=0.2), ask())
    finally:
        hold.set()


# --------------------------------------------------------------------------- broken streams


def _cut_inside_tool_block(text: bool) -> Reply:
    blocks: list[tuple[str, Any]] = [("tool", ("tu_1", "add", ['{"a": 1', ', "b": 2}']))]
    if text:
        blocks.insert(0, ("text", ["Calling add."]))
    events = sse_message(blocks, input_tokens=1234, stop_reason="tool_use")
    # cut right after the first input_json_delta: the tool block is open and half-sent
    cut = (
        next(
            i
            for i, e in enumerate(events)
            if e[0] == "content_block_delta" and "partial_json" in str(e[1])
        )
        + 1
    )
    return Reply(events=events, cut_after=cut)


async def test_stream_cut_inside_tool_use_after_text_breaks_the_step(
    server: FakeServer,
) -> None:
    server.add(_cut_inside_tool_block(text=True), Reply(events=sse_message([("text", ["x"])])))
    chunks: list[ModelChunk] = []
    with pytest.raises(ModelStreamBroken) as info:
        async for chunk in make(server).stream(ask()):
            chunks.append(chunk)
    assert chunks == [{"type": "text", "text": "Calling add."}]  # no partial tool_call
    assert len(server.requests) == 1  # not retried inside: text was already out
    err = info.value
    assert err.retry_step is True
    assert err.usage.input_tokens == 1234  # billed per message_start
    # output: message_start said 1; what was streamed ("Calling add." and '{"a": 1', 19
    # characters in 2 deltas) is estimated at ceil(19 / 4) = 5 tokens, which is more
    assert err.usage.output_tokens == 5
    assert err.usage.cost_usd == pytest.approx((1234 * 3 + 5 * 15) / 1e6)
    assert err.request_id == "req_001" and "req_001" in str(err)


async def test_stream_cut_inside_tool_use_before_output_is_retried(server: FakeServer) -> None:
    server.add(
        _cut_inside_tool_block(text=False),
        Reply(events=sse_message([("text", ["done"])], input_tokens=10)),
    )
    response = assemble(await collect(make(server), ask()))
    assert response.text == "done" and response.tool_calls == []
    assert len(server.requests) == 2
    # the failed attempt's billed input is reported (an `attempt` chunk) before the retry
    assert response.usage.input_tokens == 1234 + 10


async def test_sse_error_event_mid_stream(server: FakeServer) -> None:
    events = sse_message([("text", ["partial ", "answer"])])
    events.insert(5, sse_error("overloaded_error", "Overloaded"))
    server.add(Reply(events=events))
    with pytest.raises(ModelStreamBroken) as info:
        await collect(make(server), ask())
    assert info.value.retry_step is True
    assert info.value.status == 529
    assert isinstance(info.value.__cause__, ModelOverloaded)
    assert info.value.usage.input_tokens == 10


async def test_sse_error_event_before_output_is_retried(server: FakeServer) -> None:
    events = sse_message([("text", ["x"])])
    events.insert(2, sse_error("overloaded_error"))
    server.add(Reply(events=events), Reply(events=sse_message([("text", ["ok"])])))
    assert assemble(await collect(make(server), ask())).text == "ok"
    assert len(server.requests) == 2


async def test_stream_ending_without_message_stop_is_broken(server: FakeServer) -> None:
    events = sse_message([("text", ["half"])])[:-2]  # no message_delta, no message_stop
    server.add(Reply(events=events))
    with pytest.raises(ModelStreamBroken):
        await collect(make(server), ask())


async def test_invalid_tool_json_is_never_emitted(server: FakeServer) -> None:
    server.add(
        Reply(events=sse_message([("tool", ("tu_1", "add", ['{"a": ']))])),
        Reply(events=sse_message([("tool", ("tu_2", "add", ['{"a": 1}']))])),
    )
    response = assemble(await collect(make(server), ask()))
    assert response.tool_calls == [{"id": "tu_2", "tool": "add", "args": {"a": 1}}]
    server.add(*[Reply(events=sse_message([("tool", ("tu_1", "add", ["[1]"]))]))] * 2)
    with pytest.raises(ModelBadResponse):
        await collect(make(server, retries=1), ask())


# --------------------------------------------------------------------------- configuration


async def test_missing_key_names_the_variable(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    model = AnthropicModel(MODEL, base_url=server.url)  # constructing needs no key
    with pytest.raises(ModelMissingKey, match="ANTHROPIC_API_KEY"):
        await collect(model, ask())
    assert server.requests == []


async def test_key_and_base_url_from_environment(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-env-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    server.add(Reply(events=sse_message([("text", ["env"])])))
    assert assemble(await collect(AnthropicModel(MODEL), ask())).text == "env"
    headers = server.requests[0].headers
    assert "sk-env-key" in headers.get("x-api-key", "") + headers.get("authorization", "")
    assert server.requests[0].path == "/v1/messages"


async def test_huge_prompt_is_rejected_before_sending(server: FakeServer) -> None:
    with pytest.raises(ModelPromptTooLarge, match="max_prompt_chars"):
        await collect(make(server), ask("x" * 10_000_000))
    with pytest.raises(ModelPromptTooLarge):
        await collect(make(server, max_prompt_chars=100), ask("y" * 101))
    assert server.requests == []


def test_one_model_across_event_loops(server: FakeServer) -> None:
    server.add(*[Reply(events=sse_message([("text", ["ok"])])) for _ in range(2)])
    model = make(server)
    for _ in range(2):
        assert assemble(asyncio.run(collect(model, ask()))).text == "ok"


def test_sdk_is_imported_lazily() -> None:
    code = (
        "import sys, loomgraph.models.anthropic, loomgraph.models.openai_compat\n"
        "from loomgraph.models.anthropic import AnthropicModel\n"
        "AnthropicModel('claude-sonnet-4-5')\n"
        "assert 'anthropic' not in sys.modules, 'anthropic imported'\n"
        "assert 'openai' not in sys.modules, 'openai imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- quota exhausted


def _spend_limit_429() -> Reply:
    # No retry-after, and the code in error.details: the monthly spend cap, not a rate limit.
    return Reply(
        429,
        body={
            "type": "error",
            "error": {
                "type": "rate_limit_error",
                "message": "You have reached your monthly spend limit.",
                "details": {"error_code": "enforced_spend_limit_reached"},
            },
        },
    )


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(_spend_limit_429(), id="429-enforced-spend-limit"),
        pytest.param(
            api_error(
                400,
                "invalid_request_error",
                "You have reached your specified API usage limits. You will regain access on "
                "2026-12-01 at 00:00 UTC.",
            ),
            id="400-usage-limits",
        ),
        pytest.param(
            api_error(
                400,
                "invalid_request_error",
                "Your credit balance is too low to access the Anthropic API.",
            ),
            id="400-credit-balance",
        ),
        pytest.param(api_error(402, "billing_error", "payment required"), id="402-billing"),
        pytest.param(
            api_error(
                429, "rate_limit_error", "Your workspace spend limit is reached", retry_after="9"
            ),
            id="429-workspace-spend-limit",
        ),
    ],
)
async def test_quota_exhausted_is_not_retried(server: FakeServer, reply: Reply) -> None:
    server.add(reply, Reply(events=sse_message([("text", ["never"])])))
    sleeps = Sleeps()
    with pytest.raises(ModelQuotaExhausted) as info:
        await collect(make(server, sleeps=sleeps), ask())
    assert len(server.requests) == 1
    assert sleeps.delays == []
    assert not info.value.retryable
    assert info.value.status == reply.status and "req_001" in str(info.value)


async def test_plain_rate_limit_is_still_retried(server: FakeServer) -> None:
    server.add(
        api_error(429, "rate_limit_error", "Number of request tokens has exceeded your rate limit"),
        Reply(events=sse_message([("text", ["ok"])])),
    )
    assert assemble(await collect(make(server), ask())).text == "ok"
    assert len(server.requests) == 2
