"""Whole Agent runs on `claude-…` and `openai-compat:…` models: real SDKs, loopback servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from fake_servers import FakeServer, Reply, api_error, chat_stream, sse_message
from loomgraph import Agent
from loomgraph.runtime import InMemoryRuntime


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    srv = FakeServer().start()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", srv.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    yield srv
    srv.stop()


async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def mul(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


async def test_react_run_with_parallel_tool_calls(server: FakeServer) -> None:
    server.add(
        Reply(
            events=sse_message(
                [
                    ("text", ["Let me ", "compute."]),
                    ("tool", ("toolu_1", "add", ['{"a": 2,', ' "b": 3}'])),
                    ("tool", ("toolu_2", "mul", ['{"a": 4, "b": 5}'])),
                ],
                stop_reason="tool_use",
                input_tokens=50,
                output_tokens=20,
            )
        ),
        Reply(events=sse_message([("text", ["5 and ", "20."])], input_tokens=80, output_tokens=6)),
    )
    agent = Agent("You compute.", model="claude-sonnet-4-6", tools=[add, mul])
    events = [e async for e in agent.stream("2+3 and 4*5?", user_id="alice")]
    chunks = [e.payload["chunk"]["text"] for e in events if e.kind == "model_chunk"]
    assert chunks == ["Let me ", "compute.", "5 and ", "20."]
    calls = [e.payload["call"] for e in events if e.kind == "tool_call"]
    assert [(c["id"], c["tool"], c["args"]) for c in calls] == [
        ("toolu_1", "add", {"a": 2, "b": 3}),
        ("toolu_2", "mul", {"a": 4, "b": 5}),
    ]
    result = events[-1].payload["result"]
    assert result["status"] == "completed" and result["output"] == "5 and 20."
    assert result["usage"]["input_tokens"] == 130 and result["usage"]["model_calls"] == 2
    assert result["usage"]["cost_usd"] > 0
    first, second = server.bodies
    assert first["system"] == "You compute." or first["system"][0]["text"] == "You compute."
    assert {t["name"] for t in first["tools"]} == {"add", "mul"}
    results = second["messages"][-1]
    assert results["role"] == "user"
    assert [(b["tool_use_id"], b["content"]) for b in results["content"]] == [
        ("toolu_1", "5"),
        ("toolu_2", "20"),
    ]


class Answer(BaseModel):
    total: int


async def test_structured_output_through_the_forced_tool(server: FakeServer) -> None:
    server.add(
        Reply(events=sse_message([("text", ["It is 7."])])),
        Reply(
            events=sse_message(
                [("tool", ("toolu_9", "respond", ['{"total": 7}']))], stop_reason="tool_use"
            )
        ),
    )
    agent = Agent("x", model="claude-sonnet-4-6")
    result = await agent.run("3+4?", output_schema=Answer)
    assert result.parsed == Answer(total=7)
    assert server.bodies[1]["tool_choice"] == {"type": "tool", "name": "respond"}
    # No prefill: the fake server refuses one, as Claude 4.6 and later do.
    asked = [(m["role"], m["content"]) for m in server.bodies[1]["messages"]]
    assert [role for role, _ in asked] == ["user", "assistant", "user"], asked


async def test_a_provider_error_ends_the_run_with_its_reason_in_the_journal(
    server: FakeServer,
) -> None:
    server.add(api_error(401, "authentication_error", "invalid x-api-key", request_id="req_42"))
    runtime = InMemoryRuntime()
    agent = Agent("x", model="claude-sonnet-4-6", runtime=runtime)
    result = await agent.run("hi")
    assert result.status == "failed"
    assert "401" in result.reason and "req_42" in result.reason
    [record] = await runtime.runs()
    assert record.status == "failed" and record.reason == result.reason
    assert len(server.requests) == 1  # 401 is not retried


async def test_a_stream_cut_mid_tool_call_is_retried_as_a_whole_step(server: FakeServer) -> None:
    calls: list[int] = []

    async def record(n: int) -> int:
        """Record a call."""
        calls.append(n)
        return n

    tool_turn = sse_message(
        [("text", ["Working."]), ("tool", ("toolu_1", "record", ['{"n":', " 1}"]))],
        stop_reason="tool_use",
        input_tokens=40,
    )
    # Cut inside the tool_use block, after the text was streamed: the adapter cannot retry
    # invisibly, so the step is tried again as a whole.
    server.add(
        Reply(events=tool_turn, cut_after=9),
        Reply(events=tool_turn),
        Reply(events=sse_message([("text", ["ok"])], input_tokens=60)),
    )
    agent = Agent("x", model="claude-sonnet-4-6", tools=[record])
    events = [e async for e in agent.stream("go")]
    assert [e.kind for e in events].count("model_retry") == 1
    history = await agent.history(events[-1].run_id)
    assert history[1].patch["messages"][0]["content"] == "Working."  # stored once, complete
    assert calls == [1]  # the half tool call never ran; the complete one ran once
    result = events[-1].payload["result"]
    assert result["status"] == "completed" and result["output"] == "ok"
    # The broken attempt's billed input tokens are counted along with the two good turns.
    assert result["usage"]["input_tokens"] == 40 + 40 + 60


async def test_structured_output_that_fails_validation_once_then_passes(
    server: FakeServer,
) -> None:
    server.add(
        Reply(events=sse_message([("text", ["seven"])])),
        Reply(
            events=sse_message(
                [("tool", ("toolu_1", "respond", ['{"total": "seven"}']))], stop_reason="tool_use"
            )
        ),
        Reply(
            events=sse_message(
                [("tool", ("toolu_2", "respond", ['{"total": 7}']))], stop_reason="tool_use"
            )
        ),
    )
    result = await Agent("x", model="claude-sonnet-4-6").run("3+4?", output_schema=Answer)
    assert result.parsed == Answer(total=7)
    feedback = server.bodies[2]["messages"][-1]["content"][0]
    assert feedback["type"] == "tool_result" and feedback["is_error"] is True
    assert feedback["tool_use_id"] == "toolu_1" and "total" in str(feedback["content"])


async def test_openai_compatible_react_run_with_structured_output(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    server.add(
        Reply(
            events=chat_stream(
                tools=[
                    ("call_1", "add", ['{"a": 3,', ' "b": 4}']),
                    ("call_2", "mul", ['{"a": 1, "b": 7}']),
                ],
                finish="tool_calls",
            )
        ),
        Reply(events=chat_stream(text=["It is 7."])),
        Reply(
            events=chat_stream(tools=[("call_3", "respond", ['{"total": 7}'])], finish="tool_calls")
        ),
    )
    agent = Agent("x", model="openai-compat:qwen3:8b", tools=[add, mul])
    result = await agent.run("3+4?", output_schema=Answer)
    assert result.parsed == Answer(total=7) and result.turns == 3
    tool_turns = [m for m in server.bodies[1]["messages"] if m["role"] == "tool"]
    assert [(m["tool_call_id"], m["content"]) for m in tool_turns] == [
        ("call_1", "7"),
        ("call_2", "7"),
    ]
    assert server.bodies[2]["tool_choice"] == {"type": "function", "function": {"name": "respond"}}
