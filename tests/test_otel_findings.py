"""Telemetry never fails a run: a span processor (or tracer, or meter) that raises is logged,
rate-limited, on the `loomgraph.telemetry` logger, and the run goes on as without it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import get_current_span

from loomgraph import Agent
from loomgraph.models import ScriptedModel
from loomgraph.observability import OTelTelemetry
from loomgraph.observability.traced_span import TracedSpan
from loomgraph.protocols import RunStatus
from loomgraph.runtime.sqlite import SqliteRuntime

LOGGER = "loomgraph.telemetry"


class Broken(SpanProcessor):
    """Raises from the hooks named in `where` (`start`, `end`)."""

    def __init__(self, *where: str) -> None:
        self.where = set(where)
        self.calls = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if "start" in self.where:
            self.calls += 1
            raise RuntimeError("processor down (start)")

    def on_end(self, span: ReadableSpan) -> None:
        if "end" in self.where:
            self.calls += 1
            raise RuntimeError("processor down (end)")


def _telemetry(*processors: SpanProcessor) -> tuple[OTelTelemetry, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    # The exporter first: the SDK calls no processor after one that raised.
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for processor in processors:
        provider.add_span_processor(processor)
    return OTelTelemetry(provider), exporter


@pytest.fixture
def quiet_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    yield caplog


def _reports(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


@pytest.mark.parametrize("where", [("end",), ("start",), ("start", "end")])
async def test_a_raising_span_processor_does_not_fail_the_run(
    tmp_path: Path, quiet_logs: pytest.LogCaptureFixture, where: tuple[str, ...]
) -> None:
    broken = Broken(*where)
    telemetry, _ = _telemetry(broken)
    agent = Agent(
        "y",
        model=ScriptedModel(["hello", "again"]),
        telemetry=telemetry,
        runtime=SqliteRuntime(tmp_path / "j.db"),
    )
    result = await agent.run("p")
    assert (result.status, result.output) == (RunStatus.COMPLETED, "hello")
    assert broken.calls > 1  # it raised, more than once
    reports = _reports(quiet_logs)
    assert len(reports) == 1  # logged once, not once per span
    assert "processor down" in reports[0].getMessage()
    result = await agent.run("p2")
    assert result.status == RunStatus.COMPLETED
    assert len(_reports(quiet_logs)) == 1  # still rate-limited


def test_the_span_still_works_when_the_processor_raises_on_end(
    quiet_logs: pytest.LogCaptureFixture,
) -> None:
    telemetry, exporter = _telemetry(Broken("end"))
    with telemetry.span("outer", {"a": 1}) as span:
        span.set_attribute("b", 2)
        with telemetry.span("inner", {}):
            pass
    names = [s.name for s in exporter.get_finished_spans()]
    assert sorted(names) == ["inner", "outer"]


def test_the_callers_exception_is_not_replaced_by_the_processors(
    quiet_logs: pytest.LogCaptureFixture,
) -> None:
    telemetry, exporter = _telemetry(Broken("end"))
    with pytest.raises(KeyError, match="mine"), telemetry.span("s", {}):
        raise KeyError("mine")
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None and span.attributes["error.type"] == "KeyError"


class _RaisingSpan:
    """An OpenTelemetry span (of some other SDK) whose every method raises."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise ValueError(f"{name} broke")

        return fail


class _RaisingTracer:
    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        return _RaisingSpan()

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("start broke")


def test_a_tracer_whose_spans_raise_everywhere_is_survived(
    quiet_logs: pytest.LogCaptureFixture,
) -> None:
    telemetry, _ = _telemetry()
    telemetry._tracer = _RaisingTracer()  # type: ignore[assignment]
    with telemetry.span("chat m", {"gen_ai.operation.name": "chat", "x": 1}) as span:
        span.set_attribute("gen_ai.usage.input_tokens", 3)
    with pytest.raises(KeyError), telemetry.span("s", {}):
        raise KeyError("mine")
    assert _reports(quiet_logs)


def test_a_meter_that_raises_is_survived(quiet_logs: pytest.LogCaptureFixture) -> None:
    reader = InMemoryMetricReader()
    telemetry = OTelTelemetry(TracerProvider(), MeterProvider(metric_readers=[reader]))

    class Boom:
        def record(self, *args: Any, **kwargs: Any) -> None:
            raise ValueError("meter broke")

        add = record

    telemetry._duration = telemetry._tokens = telemetry._cost = Boom()  # type: ignore[assignment]
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}
    with telemetry.span("chat m", attrs) as span:
        span.set_attribute("gen_ai.usage.input_tokens", 3)
    assert any("meter broke" in r.getMessage() for r in _reports(quiet_logs))


def test_the_span_is_current_inside_the_block() -> None:
    telemetry, _ = _telemetry()
    with telemetry.span("s", {}) as span:
        assert isinstance(span, TracedSpan)
        assert get_current_span() is span.otel_span
