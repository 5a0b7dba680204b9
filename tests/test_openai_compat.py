"""OpenAICompatModel: the real `openai` SDK against a scripted loopback chat-completions API."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from fake_servers import FakeServer, Reply, Sleeps, assemble, chat_chunk, chat_stream
from loomgraph.models.errors import (
    ModelAuthError,
    ModelBadResponse,
    ModelConfigError,
    ModelOverloaded,
    ModelPromptTooLarge,
    ModelQuotaExhausted,
    ModelRateLimited,
    ModelRequestError,
    ModelServerError,
    ModelStreamBroken,
)
from loomgraph.models.openai_compat import OpenAICompatModel
from loomgraph.models.retry import RetryPolicy
from loomgraph.protocols import Message, ModelChunk, ModelError, ModelRequest, ToolSpec, Usage
from loomgraph.protocols.pricing import Price

TOOLS: list[ToolSpec] = [
    {
        "name": "add",
        "description": "Add.",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}}},
    },
    {"name": "div", "parameters": {"type": "object"}},
]


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer().start()
    yield srv
    srv.stop()


def make(
    server: FakeServer, *, retries: int = 4, sleeps: Sleeps | None = None, **kw: Any
) -> OpenAICompatModel:
    policy = RetryPolicy(max_retries=retries, base_delay=0.1, sleep=sleeps or Sleeps())
    return OpenAICompatModel("qwen3:8b", base_url=server.url + "/v1", retry_policy=policy, **kw)


def ask(text: str = "hi", **kw: Any) -> ModelRequest:
    return ModelRequest(messages=[{"role": "user", "content": text}], **kw)


async def collect(model: OpenAICompatModel, request: ModelRequest) -> list[ModelChunk]:
    return [chunk async for chunk in model.stream(request)]


def error_reply(status: int, message: str = "scripted failure", **headers: str) -> Reply:
    return Reply(
        status,
        headers={k.replace("_", "-"): v for k, v in headers.items()},
        body={"error": {"message": message, "type": "scripted_error", "code": None}},
    )


# --------------------------------------------------------------------------- mapping


async def test_react_turns_with_parallel_tool_calls_and_tool_errors(server: FakeServer) -> None:
    server.add(
        Reply(
            events=chat_stream(
                ["Computing."],
                [("call_1", "add", ['{"a":', " 2}"]), ("call_2", "div", ["{}"])],
                finish="tool_calls",
            )
        ),
        Reply(events=chat_stream(["2, and division failed."])),
    )
    model = make(server, temperature=0.0)
    history: list[Message] = [{"role": "user", "content": "go"}]
    first = assemble(await collect(model, ModelRequest(history, system="Be exact.", tools=TOOLS)))
    assert first.text == "Computing."
    assert first.tool_calls == [
        {"id": "call_1", "tool": "add", "args": {"a": 2}},
        {"id": "call_2", "tool": "div", "args": {}},
    ]
    assert first.finish_reason == "tool_use"
    history += [
        first.to_message(),
        {"role": "tool", "tool_call_id": "call_1", "name": "add", "content": "2"},
        {
            "role": "tool",
            "tool_call_id": "call_2",
            "name": "div",
            "content": "bad input",
            "is_error": True,
        },
    ]
    second = assemble(
        await collect(model, ModelRequest(history, system="Be exact.", tools=TOOLS, max_tokens=99))
    )
    assert second.text == "2, and division failed." and second.finish_reason == "end_turn"

    body = server.bodies[1]
    assert server.requests[1].path == "/v1/chat/completions"
    assert body["model"] == "qwen3:8b"
    assert body["max_tokens"] == 99 and server.bodies[0]["max_tokens"] == 4096
    assert body["temperature"] == 0.0
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert "tool_choice" not in body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "add",
                "description": "Add.",
                "parameters": TOOLS[0]["parameters"],
            },
        },
        {"type": "function", "function": {"name": "div", "parameters": {"type": "object"}}},
    ]
    assert body["messages"] == [
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": "Computing.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 2}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "div", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "2"},
        {"role": "tool", "tool_call_id": "call_2", "content": "ERROR: bad input"},
    ]


async def test_interleaved_tool_call_fragments(server: FakeServer) -> None:
    def frag(index: int, **fn: str) -> Any:
        extra = {"id": f"c{index}", "type": "function"} if "name" in fn else {}
        return chat_chunk({"tool_calls": [{"index": index, **extra, "function": fn}]})

    server.add(
        Reply(
            events=[
                frag(0, name="add", arguments=""),
                frag(1, name="div", arguments='{"a"'),
                frag(0, arguments='{"a": 1'),
                frag(1, arguments=": 4}"),
                frag(0, arguments="}"),
                chat_chunk({}, finish="stop"),  # some servers say "stop" after tool calls
                (None, "[DONE]"),
            ]
        )
    )
    response = assemble(await collect(make(server), ask(tools=TOOLS)))
    assert response.tool_calls == [
        {"id": "c0", "tool": "add", "args": {"a": 1}},
        {"id": "c1", "tool": "div", "args": {"a": 4}},
    ]
    assert response.finish_reason == "tool_use"


async def test_forced_tool_choice(server: FakeServer) -> None:
    server.add(
        Reply(events=chat_stream(tools=[("c1", "answer", ['{"x": 1}'])], finish="tool_calls"))
    )
    chunks = await collect(make(server), ask(tools=TOOLS, tool_choice="answer"))
    assert server.bodies[0]["tool_choice"] == {"type": "function", "function": {"name": "answer"}}
    assert assemble(chunks).tool_calls == [{"id": "c1", "tool": "answer", "args": {"x": 1}}]


@pytest.mark.parametrize(
    ("raw", "ours"), [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal")]
)
async def test_finish_reasons(server: FakeServer, raw: str, ours: str) -> None:
    server.add(Reply(events=chat_stream(["x"], finish=raw)))
    chunks = await collect(make(server), ask())
    assert [c["type"] for c in chunks] == ["text", "usage", "finish"]
    assert chunks[-1]["finish_reason"] == ours


# --------------------------------------------------------------------------- streaming, usage


async def test_text_streams_in_order_as_it_arrives(server: FakeServer) -> None:
    gate = threading.Event()
    items = chat_stream(["one ", "two ", "three"])
    items.insert(2, gate)  # after the role chunk and the first text delta
    server.add(Reply(events=items))
    stream = make(server).stream(ask())
    try:
        assert await anext(stream) == {"type": "text", "text": "one "}
    finally:
        gate.set()
    rest = [chunk async for chunk in stream]
    assert [c.get("text") for c in rest if c["type"] == "text"] == ["two ", "three"]


async def test_usage_with_cached_tokens_and_cost(server: FakeServer) -> None:
    server.add(
        *[
            Reply(
                events=chat_stream(
                    ["x"], prompt_tokens=1000, completion_tokens=100, cached_tokens=600
                )
            )
            for _ in range(2)
        ]
    )
    usage = assemble(await collect(make(server), ask())).usage
    assert usage == Usage(
        input_tokens=400,
        output_tokens=100,
        cache_read_tokens=600,
        cache_write_tokens=0,
        cost_usd=0.0,
    )  # unknown local model: free
    priced = make(server, prices={"qwen3": Price(input=1.0, output=2.0, cache_read=0.5)})
    cost = assemble(await collect(priced, ask())).usage.cost_usd
    assert cost == pytest.approx((400 * 1.0 + 100 * 2.0 + 600 * 0.5) / 1e6)


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (429, ModelRateLimited),
        (529, ModelOverloaded),
        (500, ModelServerError),
        (502, ModelServerError),
        (503, ModelServerError),
        (504, ModelServerError),
    ],
)
async def test_retried_statuses(server: FakeServer, status: int, cls: type[ModelError]) -> None:
    server.add(error_reply(status), Reply(events=chat_stream(["ok"])))
    assert assemble(await collect(make(server), ask())).text == "ok"
    assert len(server.requests) == 2
    server.add(*[error_reply(status) for _ in range(2)])
    with pytest.raises(cls) as info:
        await collect(make(server, retries=1), ask())
    assert len(server.requests) == 4
    assert info.value.status == status and info.value.request_id == "req_004"
    assert f"HTTP {status}" in str(info.value) and "req_004" in str(info.value)


async def test_429_honours_retry_after(server: FakeServer) -> None:
    server.add(error_reply(429, retry_after="3"), Reply(events=chat_stream(["ok"])))
    sleeps = Sleeps()
    await collect(make(server, sleeps=sleeps), ask())
    assert sleeps.delays == [3.0]


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, ModelRequestError),
        (401, ModelAuthError),
        (403, ModelAuthError),
        (404, ModelRequestError),
        (413, ModelPromptTooLarge),
    ],
)
async def test_client_errors_not_retried(
    server: FakeServer, status: int, cls: type[ModelError]
) -> None:
    server.add(error_reply(status, "nope"), Reply(events=chat_stream(["never"])))
    with pytest.raises(cls) as info:
        await collect(make(server), ask())
    assert len(server.requests) == 1
    assert info.value.status == status and "req_001" in str(info.value)
    assert "nope" in str(info.value)


async def test_stream_cut_inside_tool_call_breaks_the_step(server: FakeServer) -> None:
    items = chat_stream(["Calling."], [("c1", "add", ['{"a":', " 1}"])], finish="tool_calls")
    server.add(Reply(events=items, cut_after=4))  # role, text, call start, first fragment
    chunks: list[ModelChunk] = []
    with pytest.raises(ModelStreamBroken) as info:
        async for chunk in make(server).stream(ask()):
            chunks.append(chunk)
    assert chunks == [{"type": "text", "text": "Calling."}]
    assert info.value.retry_step is True
    assert len(server.requests) == 1


async def test_stream_cut_before_output_is_retried(server: FakeServer) -> None:
    items = chat_stream(tools=[("c1", "add", ['{"a":', " 1}"])], finish="tool_calls")
    server.add(Reply(events=items, cut_after=3), Reply(events=chat_stream(["ok"])))
    response = assemble(await collect(make(server), ask()))
    assert response.text == "ok" and response.tool_calls == []
    assert len(server.requests) == 2


async def test_error_object_mid_stream(server: FakeServer) -> None:
    items = chat_stream(["partial"])
    items.insert(2, (None, {"error": {"message": "engine died", "type": "server_error"}}))
    server.add(Reply(events=items))
    with pytest.raises(ModelStreamBroken, match="engine died") as info:
        await collect(make(server), ask())
    assert isinstance(info.value.__cause__, ModelServerError)


async def test_stream_without_finish_reason_is_broken(server: FakeServer) -> None:
    server.add(Reply(events=[chat_chunk({"content": "half"}), (None, "[DONE]")]))
    with pytest.raises(ModelStreamBroken):
        await collect(make(server), ask())


async def test_invalid_tool_arguments_never_emitted(server: FakeServer) -> None:
    bad = chat_stream(tools=[("c1", "add", ['{"a": '])], finish="tool_calls")
    server.add(Reply(events=bad), Reply(events=bad))
    with pytest.raises(ModelBadResponse):
        await collect(make(server, retries=1), ask())
    assert len(server.requests) == 2


# --------------------------------------------------------------------------- configuration


async def test_env_base_url_and_key(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
    server.add(Reply(events=chat_stream(["env"])))
    assert assemble(await collect(OpenAICompatModel("llama3"), ask())).text == "env"
    assert server.requests[0].headers["authorization"] == "Bearer sk-local"


async def test_no_key_needed_for_local_servers(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.add(Reply(events=chat_stream(["ok"])))
    assert assemble(await collect(make(server), ask())).text == "ok"


async def test_missing_base_url_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ModelConfigError, match="OPENAI_BASE_URL"):
        await collect(OpenAICompatModel("llama3"), ask())


async def test_huge_prompt_rejected_before_sending(server: FakeServer) -> None:
    with pytest.raises(ModelPromptTooLarge):
        await collect(make(server), ask("x" * 10_000_000))
    assert server.requests == []


# --------------------------------------------------------------------------- quota exhausted


@pytest.mark.parametrize(
    "code",
    [
        "insufficient_quota",
        "credit_balance_exhausted",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        "organization_usage_limit_exceeded",
    ],
)
async def test_insufficient_quota_is_not_retried(server: FakeServer, code: str) -> None:
    server.add(
        Reply(
            429,
            body={
                "error": {
                    "message": "You exceeded your current quota, please check your plan and "
                    "billing details.",
                    "type": "insufficient_quota",
                    "code": code,
                }
            },
        ),
        Reply(events=chat_stream(["never"])),
    )
    sleeps = Sleeps()
    with pytest.raises(ModelQuotaExhausted) as info:
        await collect(make(server, sleeps=sleeps), ask())
    assert len(server.requests) == 1 and sleeps.delays == []
    assert info.value.status == 429 and "req_001" in str(info.value)
    assert not info.value.retryable


async def test_rate_limit_429_is_still_retried(server: FakeServer) -> None:
    server.add(
        Reply(
            429,
            headers={"retry-after": "2"},
            body={
                "error": {
                    "message": "Rate limit reached for requests",
                    "type": "requests",
                    "code": "rate_limit_exceeded",
                }
            },
        ),
        Reply(events=chat_stream(["ok"])),
    )
    sleeps = Sleeps()
    assert assemble(await collect(make(server, sleeps=sleeps), ask())).text == "ok"
    assert sleeps.delays == [2.0]
