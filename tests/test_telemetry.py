"""Telemetry: the no-op default, and OpenTelemetry spans and metrics checked in memory."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from loomgraph.observability import (
    RUN_SPAN,
    NoTelemetry,
    OTelTelemetry,
    chat_attributes,
    chat_span_name,
    messages_json,
    node_attributes,
    node_span_name,
    response_attributes,
    run_attributes,
    set_attributes,
    tool_attributes,
    tool_span_name,
    usage_attributes,
)
from loomgraph.protocols import Message, Telemetry, Usage


class Otel:
    """An OTelTelemetry wired to in-memory exporters."""

    def __init__(self, capture_content: bool = False) -> None:
        self.spans_out = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans_out))
        self.reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[self.reader])
        self.telemetry = OTelTelemetry(tracer_provider, meter_provider, capture_content)

    def spans(self) -> dict[str, ReadableSpan]:
        return {span.name: span for span in self.spans_out.get_finished_spans()}

    def metrics(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        out: dict[str, list[Any]] = {}
        if data is None:
            return out
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    out.setdefault(metric.name, []).extend(metric.data.data_points)
        return out


def _run_one_turn(telemetry: Telemetry, *, fail_tool: bool = False) -> None:
    """What the engine does for a run with one node that calls a model and a tool."""
    with (
        telemetry.span(
            RUN_SPAN, run_attributes(run_id="run-1", graph_name="react", session_id="sess-9")
        ),
        telemetry.span(node_span_name("act"), node_attributes(node="act", run_id="run-1")),
    ):
        chat_attrs = chat_attributes(model="claude-x", provider="anthropic")
        with telemetry.span(chat_span_name("claude-x"), chat_attrs) as span:
            usage: Usage = Usage(input_tokens=120, output_tokens=30, cost_usd=0.25)
            set_attributes(span, usage_attributes(usage))
            set_attributes(span, response_attributes(finish_reasons="tool_use"))
        try:
            with telemetry.span(
                tool_span_name("search"), tool_attributes(tool="search", call_id="call-1")
            ):
                if fail_tool:
                    raise LookupError("index offline")
        except LookupError:
            pass  # the engine turns tool failures into error results


# --------------------------------------------------------------------------- no-op


def test_no_telemetry_is_a_shared_no_op() -> None:
    telemetry = NoTelemetry()
    assert isinstance(telemetry, Telemetry)
    first = telemetry.span("a", {"k": 1})
    assert first is telemetry.span("b", {})  # one shared object: nothing allocated per call
    with first as span:
        span.set_attribute("k", {"anything": 1})
    with pytest.raises(KeyError), telemetry.span("c", {}):
        raise KeyError("propagates")
    _run_one_turn(telemetry, fail_tool=True)
    telemetry.record_usage("m", Usage(input_tokens=1))


def test_importing_observability_loads_no_otel_or_asyncpg() -> None:
    code = (
        "import sys, loomgraph.observability as o\n"
        "o.NoTelemetry().span('x', {}); o.NoAuditLog()\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('opentelemetry', 'asyncpg')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- spans


def test_span_tree_names_kinds_and_attributes() -> None:
    otel = Otel()
    assert isinstance(otel.telemetry, Telemetry)
    _run_one_turn(otel.telemetry)
    spans = otel.spans()
    assert set(spans) == {"loom.run", "loom.node act", "chat claude-x", "execute_tool search"}
    run, node = spans["loom.run"], spans["loom.node act"]
    chat, tool = spans["chat claude-x"], spans["execute_tool search"]

    assert run.parent is None
    assert node.parent is not None and node.parent.span_id == run.context.span_id
    for child in (chat, tool):
        assert child.parent is not None and child.parent.span_id == node.context.span_id
        assert child.context.trace_id == run.context.trace_id

    assert run.attributes is not None and node.attributes is not None
    assert run.attributes["gen_ai.conversation.id"] == "sess-9"
    assert run.attributes["loom.run.id"] == "run-1"
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert node.attributes["loom.node.name"] == "act"

    assert chat.kind is SpanKind.CLIENT and tool.kind is SpanKind.INTERNAL
    assert dict(chat.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "claude-x",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 30,
        "loom.usage.cost_usd": 0.25,
        "gen_ai.response.finish_reasons": ("tool_use",),
    }
    assert dict(tool.attributes or {}) == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "search",
        "gen_ai.tool.call.id": "call-1",
        "gen_ai.tool.type": "function",
    }
    for span in spans.values():
        assert span.status.status_code is StatusCode.UNSET


def test_exception_sets_error_status_and_records_it() -> None:
    otel = Otel(capture_content=True)  # the message too (test_telemetry_content: without)
    _run_one_turn(otel.telemetry, fail_tool=True)
    spans = otel.spans()
    tool = spans["execute_tool search"]
    assert tool.status.status_code is StatusCode.ERROR
    assert "index offline" in (tool.status.description or "")
    assert (tool.attributes or {})["error.type"] == "LookupError"
    events = [e for e in tool.events if e.name == "exception"]
    assert len(events) == 1
    assert (events[0].attributes or {})["exception.type"] == "LookupError"
    # The node caught it: only the span the exception escaped from is in error.
    assert spans["loom.node act"].status.status_code is StatusCode.UNSET


def test_exception_escaping_every_span_marks_each() -> None:
    otel = Otel()

    class Boom(Exception):
        pass

    with (
        pytest.raises(Boom),
        otel.telemetry.span(RUN_SPAN, {}),
        otel.telemetry.span(node_span_name("n"), {}),
    ):
        raise Boom
    for span in otel.spans().values():
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})["error.type"].endswith("Boom")


async def test_concurrent_tool_spans_share_their_node_parent() -> None:
    otel = Otel()
    telemetry = otel.telemetry

    async def tool(name: str) -> None:
        with telemetry.span(tool_span_name(name), tool_attributes(tool=name, call_id=name)):
            await asyncio.sleep(0)  # yield so the two spans are open at once

    with telemetry.span(node_span_name("fanout"), {}):
        await asyncio.gather(tool("a"), tool("b"))
    spans = otel.spans()
    node = spans["loom.node fanout"]
    for name in ("execute_tool a", "execute_tool b"):
        parent = spans[name].parent
        assert parent is not None and parent.span_id == node.context.span_id


def test_content_is_recorded_only_when_asked() -> None:
    messages: list[Message] = [
        {"role": "user", "content": "secret question"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "tool": "search", "args": {"q": "x"}}],
        },
        {"role": "tool", "content": "result", "tool_call_id": "c1"},
    ]
    for capture in (False, True):
        otel = Otel(capture_content=capture)
        attrs = {**chat_attributes(model="m"), "gen_ai.input.messages": messages_json(messages)}
        with otel.telemetry.span(chat_span_name("m"), attrs) as span:
            span.set_attribute("gen_ai.output.messages", "[]")
            span.set_attribute("gen_ai.tool.call.arguments", {"q": "x"})
        recorded = dict(otel.spans()["chat m"].attributes or {})
        content = {
            k
            for k in recorded
            if k.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.tool.call"))
        }
        if capture:
            assert content == {
                "gen_ai.input.messages",
                "gen_ai.output.messages",
                "gen_ai.tool.call.arguments",
            }
            parsed = json.loads(recorded["gen_ai.input.messages"])
            assert parsed[0] == {
                "role": "user",
                "parts": [{"type": "text", "content": "secret question"}],
            }
            assert parsed[1]["parts"][0]["type"] == "tool_call"
            assert parsed[2]["parts"][0]["type"] == "tool_call_response"
            assert json.loads(recorded["gen_ai.tool.call.arguments"]) == {"q": "x"}
        else:
            assert content == set()
            assert "secret" not in json.dumps(recorded)


def test_attribute_values_are_coerced_for_otel() -> None:
    otel = Otel()
    with otel.telemetry.span("custom", {"nested": {"a": [1, 2]}, "none": None}) as span:
        span.set_attribute("list", ["a", "b"])
        span.set_attribute("mixed", [1, "a"])
        span.add_event("checkpoint")  # not in the protocol: passed to the OTel span
    recorded = otel.spans()["custom"]
    attrs = dict(recorded.attributes or {})
    assert attrs == {"nested": '{"a": [1, 2]}', "list": ("a", "b"), "mixed": '[1, "a"]'}
    assert [e.name for e in recorded.events] == ["checkpoint"]


# --------------------------------------------------------------------------- metrics


def test_chat_span_records_token_cost_and_duration_metrics() -> None:
    otel = Otel()
    _run_one_turn(otel.telemetry)
    metrics = otel.metrics()

    tokens = {p.attributes["gen_ai.token.type"]: p for p in metrics["gen_ai.client.token.usage"]}
    assert (tokens["input"].sum, tokens["input"].count) == (120, 1)
    assert (tokens["output"].sum, tokens["output"].count) == (30, 1)
    assert tokens["input"].attributes["gen_ai.request.model"] == "claude-x"
    assert tokens["input"].attributes["gen_ai.provider.name"] == "anthropic"

    (cost,) = metrics["loom.usage.cost"]
    assert cost.value == pytest.approx(0.25)

    durations = {
        p.attributes["gen_ai.operation.name"]: p
        for p in metrics["gen_ai.client.operation.duration"]
    }
    # loom.run carries invoke_agent; loom.node spans carry no operation and are not measured.
    assert set(durations) == {"chat", "execute_tool", "invoke_agent"}
    assert all(p.count == 1 and p.sum >= 0 for p in durations.values())
    assert durations["chat"].attributes["gen_ai.request.model"] == "claude-x"
    assert durations["execute_tool"].attributes["gen_ai.tool.name"] == "search"


def test_failed_operation_duration_carries_error_type() -> None:
    otel = Otel()
    _run_one_turn(otel.telemetry, fail_tool=True)
    points = otel.metrics()["gen_ai.client.operation.duration"]
    (tool,) = [p for p in points if p.attributes["gen_ai.operation.name"] == "execute_tool"]
    assert tool.attributes["error.type"] == "LookupError"


def test_record_usage_directly() -> None:
    otel = Otel()
    otel.telemetry.record_usage(
        "gpt-x", Usage(input_tokens=10, output_tokens=5, cost_usd=0.5), provider="openai"
    )
    otel.telemetry.record_usage("gpt-x", Usage(input_tokens=7, cost_usd=0.25), provider="openai")
    metrics = otel.metrics()
    tokens = {p.attributes["gen_ai.token.type"]: p for p in metrics["gen_ai.client.token.usage"]}
    assert (tokens["input"].sum, tokens["input"].count) == (17, 2)
    assert (tokens["output"].sum, tokens["output"].count) == (5, 1)
    (cost,) = metrics["loom.usage.cost"]
    assert cost.value == pytest.approx(0.75)
    assert dict(cost.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-x",
        "gen_ai.provider.name": "openai",
    }


def test_helpers_drop_missing_values() -> None:
    assert node_attributes(node="n", run_id="r") == {"loom.node.name": "n", "loom.run.id": "r"}
    assert usage_attributes(Usage(output_tokens=3)) == {"gen_ai.usage.output_tokens": 3}
    assert response_attributes(finish_reasons=["stop", "length"]) == {
        "gen_ai.response.finish_reasons": ["stop", "length"]
    }
    assert "user.id" not in run_attributes(run_id="r", graph_name="g")
