"""Telemetry follows the OpenTelemetry GenAI semantic conventions: attribute names checked
against the `opentelemetry-semantic-conventions` package's own constants, the spans of a
real run carry every attribute issue 16 lists, content only on opt-in, and OTLP/HTTP export
to a loopback receiver this test starts (decoded with opentelemetry-proto)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.attributes import user_attributes
from opentelemetry.semconv.attributes import error_attributes

from loomgraph import Agent
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.models import ScriptedModel
from loomgraph.observability import OTelTelemetry, otlp
from loomgraph.protocols import semconv

CALL = {"tool_calls": [{"tool": "add", "args": {"a": 1, "b": 2}}]}
# ReAct with a model node that sets max_tokens, so the request carries it.
GRAPH = graph_from_yaml(
    "name: react\nentry: model\nnodes:\n  model: {kind: model, max_tokens: 77}\n"
    "  tools: {kind: tools}\nedges:\n"
    "  - {from: model, to: tools, when: 'last_message.tool_calls | length > 0'}\n"
    "  - {from: model, to: END}\n  - {from: tools, to: model}\n"
)


async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_attribute_names_are_the_conventions_own() -> None:
    ours = {
        name: value
        for name, value in vars(semconv).items()
        if name.startswith("GEN_AI_") and isinstance(value, str)
    }
    assert len(ours) >= 20
    for name, value in ours.items():
        assert getattr(gen_ai, name) == value, name
    assert semconv.USER_ID == user_attributes.USER_ID
    assert semconv.ERROR_TYPE == error_attributes.ERROR_TYPE
    ops = gen_ai.GenAiOperationNameValues
    assert ops.CHAT.value == semconv.OP_CHAT
    assert ops.EXECUTE_TOOL.value == semconv.OP_EXECUTE_TOOL
    assert ops.INVOKE_AGENT.value == semconv.OP_INVOKE_AGENT
    # The documented loomgraph attributes keep their names.
    assert semconv.LOOM_COST_USD == "loom.usage.cost_usd"
    assert (semconv.LOOM_GRAPH_HASH, semconv.LOOM_NODE_VISIT) == (
        "loom.graph.hash",
        "loom.node.visit",
    )


async def traced_run(capture_content: bool) -> dict[str, ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = OTelTelemetry(provider, capture_content=capture_content)
    agent = Agent(
        "Be brief.",
        architecture=GRAPH,
        model=ScriptedModel([CALL, "3"]),
        tools=[add],
        telemetry=telemetry,
    )
    result = await agent.run("1+2?", user_id="alice", session_id="s1")
    assert result.ok
    spans: dict[str, ReadableSpan] = {}
    for span in exporter.get_finished_spans():
        spans.setdefault(span.name, span)  # the first of each name
    return spans


async def test_spans_carry_every_required_and_recommended_attribute() -> None:
    spans = await traced_run(capture_content=False)
    run = spans[semconv.RUN_SPAN].attributes or {}
    assert run[gen_ai.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert run[gen_ai.GEN_AI_AGENT_NAME] == "react"
    assert run[gen_ai.GEN_AI_CONVERSATION_ID] == "s1"
    assert run[user_attributes.USER_ID] == "alice"
    assert len(str(run["loom.graph.hash"])) == 16
    node = spans["loom.node model"].attributes or {}
    assert node["loom.node.visit"] == 1 and node["loom.node.name"] == "model"
    chat = spans["chat scripted"].attributes or {}
    assert chat[gen_ai.GEN_AI_OPERATION_NAME] == "chat"
    assert chat[gen_ai.GEN_AI_PROVIDER_NAME] == "loomgraph"
    assert chat[gen_ai.GEN_AI_REQUEST_MODEL] == "scripted"
    assert chat[gen_ai.GEN_AI_CONVERSATION_ID] == "s1"
    assert chat[gen_ai.GEN_AI_REQUEST_MAX_TOKENS] == 77
    assert list(chat[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS]) == ["tool_use"]  # type: ignore[arg-type]
    assert chat[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] > 0
    assert "loom.usage.cost_usd" in chat or semconv.LOOM_COST_USD not in chat
    tool = spans["execute_tool add"].attributes or {}
    assert tool[gen_ai.GEN_AI_TOOL_TYPE] == "function"
    assert tool[gen_ai.GEN_AI_TOOL_NAME] == "add" and tool[gen_ai.GEN_AI_TOOL_CALL_ID]
    for attrs in (chat, tool):
        assert not set(attrs) & semconv.CONTENT_ATTRIBUTES


async def test_content_is_recorded_only_on_opt_in_as_the_conventions_specify() -> None:
    spans = await traced_run(capture_content=True)
    chat = spans["chat scripted"].attributes or {}
    inputs = json.loads(str(chat[gen_ai.GEN_AI_INPUT_MESSAGES]))
    assert inputs == [{"role": "user", "parts": [{"type": "text", "content": "1+2?"}]}]
    system = json.loads(str(chat[gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS]))
    assert system == [{"type": "text", "content": "Be brief."}]
    (output,) = json.loads(str(chat[gen_ai.GEN_AI_OUTPUT_MESSAGES]))
    assert output["role"] == "assistant" and output["finish_reason"] == "tool_use"
    (part,) = [p for p in output["parts"] if p["type"] == "tool_call"]
    assert part["name"] == "add" and part["arguments"] == {"a": 1, "b": 2}
    tool = spans["execute_tool add"].attributes or {}
    assert json.loads(str(tool[gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS])) == {"a": 1, "b": 2}
    assert tool[gen_ai.GEN_AI_TOOL_CALL_RESULT] == "3"


# --------------------------------------------------------------------------- OTLP/HTTP


class Receiver:
    """A loopback OTLP/HTTP receiver: keeps the decoded trace export requests."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        self.got = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.paths.append(self.path)
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    receiver.requests.append(request)
                    receiver.got.set()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for request in self.requests:
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        attrs = {a.key: _value(a.value) for a in span.attributes}
                        out.setdefault(span.name, attrs)
        return out


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


async def test_otlp_http_export_reaches_a_collector(receiver: Receiver) -> None:
    telemetry = otlp(receiver.url, capture_content=True)
    try:
        agent = Agent("x", model=ScriptedModel([CALL, "3"]), tools=[add], telemetry=telemetry)
        result = await agent.run("1+2?", user_id="bob", session_id="s2")
        assert result.ok
        assert telemetry.flush(timeout_s=10)
        assert receiver.got.wait(10)
    finally:
        telemetry.shutdown()
    spans = receiver.spans()
    assert {"loom.run", "loom.node model", "chat scripted", "execute_tool add"} <= set(spans)
    assert spans["loom.run"]["user.id"] == "bob"
    assert spans["chat scripted"]["gen_ai.provider.name"] == "loomgraph"
    assert spans["chat scripted"]["gen_ai.response.finish_reasons"] == ["tool_use"]
    assert "gen_ai.input.messages" in spans["chat scripted"]
    assert "/v1/metrics" in receiver.paths  # shutdown sends the metrics too
    resource = receiver.requests[0].resource_spans[0].resource
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == (
        "loomgraph"
    )


async def test_an_agent_files_otlp_endpoint_exports_under_the_agents_name(
    receiver: Receiver, tmp_path: Any
) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "schema_version: 1\nname: billing-bot\ninstructions: x\nmodel: echo\n"
        f"telemetry: {{otlp_endpoint: '{receiver.url}'}}\n",
        encoding="utf-8",
    )
    agent = Agent.from_file(path)
    telemetry = agent.deps.telemetry
    try:
        assert (await agent.run("hello")).ok
        assert telemetry.flush(timeout_s=10)  # type: ignore[attr-defined]
        assert receiver.got.wait(10)
    finally:
        telemetry.shutdown()  # type: ignore[attr-defined]
    spans = receiver.spans()
    assert spans["loom.run"][gen_ai.GEN_AI_AGENT_NAME] == "billing-bot"
    assert "gen_ai.input.messages" not in spans["chat echo"]  # content only when captured
    assert "/v1/metrics" in receiver.paths
    resource = receiver.requests[0].resource_spans[0].resource
    attributes = {a.key: a.value.string_value for a in resource.attributes}
    assert attributes["service.name"] == "billing-bot"
