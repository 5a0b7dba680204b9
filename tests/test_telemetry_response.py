"""Chat spans carry what the provider said of its response (`gen_ai.response.id`,
`gen_ai.response.model`) and the `max_tokens` the request was sent with, through the real
SDKs against loopback fakes of the Messages API and chat completions; and no content or key
reaches a span or the audit log without content capture."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fake_servers import FakeServer, Reply, chat_stream, sse_message
from loomgraph import Agent
from loomgraph.models.anthropic import AnthropicModel
from loomgraph.models.openai_compat import OpenAICompatModel
from loomgraph.observability import FileAuditLog, OTelTelemetry
from loomgraph.protocols import ModelRequest

KEY = "sk-SECRET-KEY-999"
SECRETS = [KEY, "ARG-SECRET", "TOOL-OUTPUT-SECRET", "ANSWER-SECRET", "SYSTEM-SECRET",
           "PROMPT-SECRET"]  # fmt: skip


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer().start()
    yield srv
    srv.stop()


def traced() -> tuple[InMemorySpanExporter, OTelTelemetry]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, OTelTelemetry(provider)


async def vault(code: str) -> str:
    """Read the vault."""
    return "TOOL-OUTPUT-SECRET"


def chats(exporter: InMemorySpanExporter) -> list[dict[str, Any]]:
    spans: list[ReadableSpan] = [
        s for s in exporter.get_finished_spans() if s.name.startswith("chat")
    ]
    return [dict(span.attributes or {}) for span in spans]


def everything(exporter: InMemorySpanExporter, audit: Path) -> str:
    spans = [
        [
            dict(s.attributes or {}),
            [dict(e.attributes or {}) for e in s.events],
            s.status.description,
        ]
        for s in exporter.get_finished_spans()
    ]
    return json.dumps(spans, default=str) + audit.read_text()


async def test_anthropic_chat_spans_name_the_response(server: FakeServer, tmp_path: Path) -> None:
    served = "claude-sonnet-4-6-20250101"
    server.add(
        Reply(
            events=sse_message(
                [("tool", ("tu_1", "vault", ['{"code": "ARG-SECRET"}']))],
                stop_reason="tool_use",
                model=served,
            )
        ),
        Reply(events=sse_message([("text", ["ANSWER-", "SECRET"])], model=served)),
    )
    exporter, telemetry = traced()
    audit = FileAuditLog(tmp_path / "audit.jsonl", unsigned=True)
    model = AnthropicModel("claude-sonnet-4-6", api_key=KEY, base_url=server.url, max_tokens=777)
    agent = Agent("SYSTEM-SECRET", model=model, tools=[vault], telemetry=telemetry, audit_log=audit)
    result = await agent.run("PROMPT-SECRET")
    assert result.output == "ANSWER-SECRET"
    spans = chats(exporter)
    assert len(spans) == 2
    for span in spans:
        assert span["gen_ai.response.id"] == "msg_1"
        assert span["gen_ai.response.model"] == served
        assert span["gen_ai.request.model"] == "claude-sonnet-4-6"
        assert span["gen_ai.request.max_tokens"] == 777  # what the request was sent with
    assert [b["max_tokens"] for b in server.bodies] == [777, 777]
    assert [s for s in SECRETS if s in everything(exporter, tmp_path / "audit.jsonl")] == []


async def test_openai_chat_spans_name_the_response(server: FakeServer, tmp_path: Path) -> None:
    server.add(
        Reply(events=chat_stream(tools=[("call_1", "vault", ['{"code": "ARG-SECRET"}'])],
                                 finish="tool_calls")),
        Reply(events=chat_stream(["ANSWER-", "SECRET"])),
    )  # fmt: skip
    exporter, telemetry = traced()
    audit = FileAuditLog(tmp_path / "audit.jsonl", unsigned=True)
    model = OpenAICompatModel("qwen3:8b", base_url=server.url + "/v1", api_key=KEY, max_tokens=555)
    agent = Agent("SYSTEM-SECRET", model=model, tools=[vault], telemetry=telemetry, audit_log=audit)
    result = await agent.run("PROMPT-SECRET")
    assert result.output == "ANSWER-SECRET"
    spans = chats(exporter)
    assert len(spans) == 2
    for span in spans:
        assert span["gen_ai.response.id"] == "chatcmpl-1"
        assert span["gen_ai.response.model"] == "local-model"
        assert span["gen_ai.request.max_tokens"] == 555
    assert [s for s in SECRETS if s in everything(exporter, tmp_path / "audit.jsonl")] == []


async def test_the_usage_chunk_carries_the_response_id_and_model(server: FakeServer) -> None:
    server.add(Reply(events=sse_message([("text", ["hi"])], model="claude-x-1")))
    model = AnthropicModel("claude-x", api_key="k", base_url=server.url)
    request = ModelRequest(messages=[{"role": "user", "content": "hi"}])
    chunks = [chunk async for chunk in model.stream(request)]
    (usage,) = [c for c in chunks if c["type"] == "usage"]
    assert usage.get("response_id") == "msg_1"
    assert usage.get("response_model") == "claude-x-1"


async def test_a_response_without_id_or_model_sets_neither(server: FakeServer) -> None:
    events = sse_message([("text", ["hi"])])
    start = events[0][1]["message"]
    del start["id"]
    start["model"] = 12  # not text: ignored, never a failure of the call
    server.add(Reply(events=events))
    exporter, telemetry = traced()
    model = AnthropicModel("claude-x", api_key="k", base_url=server.url)
    result = await Agent("x", model=model, telemetry=telemetry).run("hi")
    assert result.status == "completed"
    (span,) = chats(exporter)
    assert "gen_ai.response.id" not in span
    assert "gen_ai.response.model" not in span
