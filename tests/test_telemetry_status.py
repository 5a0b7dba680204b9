"""The status of the run span follows the run's result, and control flow is not an error.

A run that ends `failed`, `limit_reached` or `budget_exhausted` marks its `invoke_agent`
span ERROR with `error.type` (and its duration metric); a run that waits for an approval or
an interrupt, or that its caller cancels, is not an error on any span. Every run span says
how the run ended in `loom.run.status`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from loomgraph import Agent
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.governance import BudgetConfig, Caps, StandardBudget, StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.models.scripted import as_turn
from loomgraph.observability import OTelTelemetry
from loomgraph.protocols import ModelChunk, ModelRequest

WAIT = 10.0  # a bound on waiting for the model to start streaming, never reached


class Traced:
    """An OTelTelemetry with in-memory span and metric exporters."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.telemetry = OTelTelemetry(provider, MeterProvider(metric_readers=[self.reader]))

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def run_span(self) -> ReadableSpan:
        (span,) = [s for s in self.spans() if s.name == "loom.run"]
        return span

    def run_duration(self) -> dict[str, Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        points = [
            dict(point.attributes or {})
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == "gen_ai.client.operation.duration"
            for point in metric.data.data_points
            if (point.attributes or {}).get("gen_ai.operation.name") == "invoke_agent"
        ]
        (point,) = points
        return point


async def echo(x: str) -> str:
    """A tool."""
    return "ok"


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_failed_run_marks_its_span_and_duration_as_an_error() -> None:
    traced = Traced()
    agent = Agent(
        "x", model=ScriptedModel([RuntimeError("provider down")]), telemetry=traced.telemetry
    )
    result = await agent.run("hi")
    assert result.status == "failed"
    run = traced.run_span()
    assert run.status.status_code is StatusCode.ERROR
    # The failure's own class, as on the node span it escaped from.
    assert attrs(run)["error.type"] == "RuntimeError"
    assert attrs(run)["loom.run.status"] == "failed"
    assert traced.run_duration()["error.type"] == "RuntimeError"


async def test_a_run_that_reached_its_visit_limit_is_an_error() -> None:
    traced = Traced()
    loop = ScriptedModel(
        lambda req: as_turn({"tool_calls": [{"tool": "echo", "args": {"x": "1"}}]}, req.call_index)
    )
    result = await Agent("x", model=loop, tools=[echo], telemetry=traced.telemetry).run("hi")
    assert result.status == "limit_reached"
    run = traced.run_span()
    assert run.status.status_code is StatusCode.ERROR
    assert attrs(run)["error.type"] == "limit_reached"
    assert attrs(run)["loom.run.status"] == "limit_reached"
    assert traced.run_duration()["error.type"] == "limit_reached"


async def test_a_run_over_its_budget_is_an_error() -> None:
    traced = Traced()
    script: list[Any] = [{"tool_calls": [{"tool": "echo", "args": {"x": "1"}}]}, "done"]
    budget = StandardBudget(BudgetConfig(per_user=Caps(model_calls=1)))
    agent = Agent(
        "x", model=ScriptedModel(script), tools=[echo], budget=budget, telemetry=traced.telemetry
    )
    result = await agent.run("hi", user_id="u")
    assert result.status == "budget_exhausted"
    run = traced.run_span()
    assert run.status.status_code is StatusCode.ERROR
    assert attrs(run)["error.type"] == "loomgraph.protocols.governance.BudgetExceeded"
    assert attrs(run)["loom.run.status"] == "budget_exhausted"


async def test_a_completed_run_is_not_an_error() -> None:
    traced = Traced()
    await Agent("x", model=ScriptedModel(["hi"]), telemetry=traced.telemetry).run("hi")
    run = traced.run_span()
    assert run.status.status_code is StatusCode.UNSET
    assert attrs(run)["loom.run.status"] == "completed"
    assert "error.type" not in attrs(run)
    assert "error.type" not in traced.run_duration()


def assert_no_error(spans: list[ReadableSpan]) -> None:
    for span in spans:
        assert span.status.status_code is StatusCode.UNSET, span.name
        assert "error.type" not in attrs(span), span.name
        assert [e.name for e in span.events] == [], span.name


async def test_waiting_for_an_approval_is_not_an_error() -> None:
    traced = Traced()
    model = ScriptedModel([{"tool_calls": [{"tool": "echo", "args": {"x": "prod"}}]}, "ok"])
    agent = Agent(
        "x",
        model=model,
        tools=[echo],
        permissions=StandardPermissions(ask=["echo"]),
        telemetry=traced.telemetry,
    )
    result = await agent.run("go")
    assert result.status == "awaiting_approval"
    assert_no_error(traced.spans())
    assert attrs(traced.run_span())["loom.run.status"] == "awaiting_approval"


REVIEW = """
name: review
state:
  approved: {type: bool, default: false}
entry: ask
nodes:
  ask: {kind: interrupt, request: bool, output: approved, message: "Send {{ input }}?"}
  send: {kind: llm, prompt: "Send {{ input }}", output: output}
edges:
  - {from: ask, to: send, when: approved}
  - {from: ask, to: END}
"""


async def test_waiting_at_an_interrupt_is_not_an_error() -> None:
    traced = Traced()
    agent = Agent(
        "x",
        model=ScriptedModel(["sent"]),
        architecture=graph_from_yaml(REVIEW),
        telemetry=traced.telemetry,
    )
    result = await agent.run("the report")
    assert result.status == "interrupted"
    assert "loom.node ask" in [s.name for s in traced.spans()]
    assert_no_error(traced.spans())
    assert attrs(traced.run_span())["loom.run.status"] == "interrupted"


class Stalled(ScriptedModel):
    """Streams one chunk, says so, and then waits for ever (until cancelled)."""

    def __init__(self) -> None:
        super().__init__(["never"])
        self.streaming = asyncio.Event()

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        yield {"type": "text", "text": "a"}
        self.streaming.set()
        await asyncio.Event().wait()
        yield {"type": "text", "text": "b"}


async def test_a_callers_cancel_is_not_an_error() -> None:
    traced = Traced()
    model = Stalled()
    task = asyncio.create_task(Agent("x", model=model, telemetry=traced.telemetry).run("hi"))
    async with asyncio.timeout(WAIT):
        await model.streaming.wait()
    task.cancel()
    async with asyncio.timeout(WAIT):
        with contextlib.suppress(asyncio.CancelledError):
            await task
    spans = traced.spans()
    assert {s.name for s in spans} == {"loom.run", "loom.node model", "chat scripted"}
    assert_no_error(spans)
    assert attrs(traced.run_span())["loom.run.status"] == "cancelled"
    assert "error.type" not in traced.run_duration()


async def failing(x: str) -> str:
    """A tool that fails."""
    raise ValueError("no such x")


async def test_a_tool_error_result_marks_its_tool_span_only() -> None:
    traced = Traced()
    script: list[Any] = [{"tool_calls": [{"tool": "failing", "args": {"x": "1"}}]}, "sorry"]
    agent = Agent("x", model=ScriptedModel(script), tools=[failing], telemetry=traced.telemetry)
    result = await agent.run("hi")
    assert result.status == "completed"
    (tool,) = [s for s in traced.spans() if s.name == "execute_tool failing"]
    # `error.type` set by the engine (the tool's error became a result) means ERROR.
    assert tool.status.status_code is StatusCode.ERROR
    assert attrs(tool)["error.type"] == "tool_error"
    assert_no_error([s for s in traced.spans() if s is not tool])


async def test_only_a_cancel_of_the_task_is_not_an_error() -> None:
    traced = Traced()
    telemetry = traced.telemetry
    # Some code raising CancelledError of its own, its task not cancelled: a failure.
    with contextlib.suppress(asyncio.CancelledError), telemetry.span("own", {}):
        raise asyncio.CancelledError
    inside = asyncio.Event()

    async def cancelled() -> None:
        with telemetry.span("cancelled", {}):
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(cancelled())
    async with asyncio.timeout(WAIT):
        await inside.wait()
    task.cancel()
    async with asyncio.timeout(WAIT):
        with contextlib.suppress(asyncio.CancelledError):
            await task
    spans = {s.name: s for s in traced.spans()}
    assert spans["own"].status.status_code is StatusCode.ERROR
    assert attrs(spans["own"])["error.type"] == "asyncio.exceptions.CancelledError"
    assert_no_error([spans["cancelled"]])


async def test_a_resume_that_gives_a_run_up_traces_its_dead_letter(tmp_path: Any) -> None:
    """A resume that found too many failed recoveries made the run a dead letter without a
    run span: the trace showed nothing of it, and no duration metric counted it."""
    traced = Traced()
    agent = Agent(
        "x",
        model=ScriptedModel([RuntimeError("provider down")]),
        telemetry=traced.telemetry,
        runtime=f"sqlite:{tmp_path / 'journal.db'}",
        max_recoveries=0,
    )
    try:
        failed = await agent.run("hi")
        assert failed.status == "failed"
        first = traced.run_span().context
        traced.exporter.clear()
        given_up = await agent.resume(failed.run_id)
        assert given_up.status == "dead_letter"
        run = traced.run_span()
        [link] = run.links  # to the run's first span, as a resume's is
        assert first is not None and link.context.span_id == first.span_id
        assert run.status.status_code is StatusCode.ERROR
        assert attrs(run)["loom.run.status"] == "dead_letter"
        assert attrs(run)["error.type"] == "dead_letter"
        assert attrs(run)["loom.run.id"] == failed.run_id
        assert attrs(run)["gen_ai.operation.name"] == "invoke_agent"
        data = traced.reader.get_metrics_data()
        assert data is not None
        counted = [
            (point.attributes or {}).get("error.type")
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == "gen_ai.client.operation.duration"
            for point in metric.data.data_points
        ]
        assert "dead_letter" in counted, counted
    finally:
        await agent.aclose()
