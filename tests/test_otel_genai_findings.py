"""loomgraph's OpenTelemetry telemetry against the GenAI semantic conventions, as a probe
found it: `OTEL_SERVICE_NAME` ignored, cached prompt tokens left out of
`gen_ai.usage.input_tokens`, the `invoke_agent` span without its provider and model, fact
extraction's model calls missing from the token metrics, a refused tool call invisible in
the trace. Each test's docstring says what went wrong before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loomgraph import Agent
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.observability import OTelTelemetry, otlp
from loomgraph.runtime.sqlite import SqliteRuntime


class Traced:
    """An OTelTelemetry wired to in-memory span and metric readers."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.telemetry = OTelTelemetry(provider, MeterProvider(metric_readers=[self.reader]))

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == metric:
                        found.extend(m.data.data_points)
        return found


async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def react_script() -> ScriptedModel:
    return ScriptedModel([{"tool_calls": [{"tool": "add", "args": {"a": 1, "b": 2}}]}, "3"])


async def test_invoke_agent_span_and_its_duration_name_the_provider_and_model() -> None:
    """A user runs a ReAct agent on one model and charts
    `gen_ai.client.operation.duration` by `gen_ai.provider.name`. The conventions make
    `gen_ai.provider.name` Required on the invoke_agent (internal) span and on every
    `gen_ai.client.operation.duration` point, and `gen_ai.request.model` Conditionally
    Required (if available: the agent has one model). The run span and its duration point
    carry neither, so agent runs fall out of every per-provider/per-model view."""
    traced = Traced()
    agent = Agent("x", model=react_script(), tools=[add], telemetry=traced.telemetry)
    assert (await agent.run("1+2")).ok
    (run,) = [s for s in traced.spans() if s.parent is None]
    assert run.attributes is not None
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes.get("gen_ai.provider.name") == "loomgraph"
    assert run.attributes.get("gen_ai.request.model") == "scripted"
    invoke = [
        p
        for p in traced.points("gen_ai.client.operation.duration")
        if p.attributes["gen_ai.operation.name"] == "invoke_agent"
    ]
    assert len(invoke) == 1
    assert invoke[0].attributes.get("gen_ai.provider.name") == "loomgraph"


async def test_cached_prompt_tokens_count_as_input_tokens() -> None:
    """A user's model answers from a warm prompt cache: 200 fresh prompt tokens and
    800 read from the cache (what Anthropic reports as input_tokens=200,
    cache_read_input_tokens=800, and what the OpenAI adapter turns prompt_tokens=1000,
    cached_tokens=800 into). The conventions say `gen_ai.usage.input_tokens` SHOULD include
    all input tokens, cached ones included (`gen_ai.usage.cache_read.input_tokens` is a part
    of it), so the span and the `gen_ai.client.token.usage` input point should say 1000. They
    say 200: dashboards undercount the prompt by the cached part."""
    traced = Traced()
    usage = {"input_tokens": 200, "cache_read_tokens": 800, "output_tokens": 5}
    model = ScriptedModel([{"text": "hi", "usage": usage}])
    agent = Agent("x", model=model, telemetry=traced.telemetry)
    assert (await agent.run("hello")).ok
    (chat,) = traced.named("chat scripted")
    assert chat.attributes is not None
    assert chat.attributes["gen_ai.usage.cache_read.input_tokens"] == 800
    assert chat.attributes["gen_ai.usage.input_tokens"] == 1000
    inputs = [
        p
        for p in traced.points("gen_ai.client.token.usage")
        if p.attributes["gen_ai.token.type"] == "input"
    ]
    assert sum(p.sum for p in inputs) == 1000


def test_otlp_respects_otel_service_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator deploys an agent with the standard `OTEL_SERVICE_NAME=billing-agent`
    (and `OTEL_RESOURCE_ATTRIBUTES`) and calls `otlp(endpoint)` without `service_name=`. The
    OpenTelemetry SDK spec says OTEL_SERVICE_NAME sets `service.name`; `otlp` always passes
    its default `service_name="loomgraph"` to `Resource.create`, which wins over the
    environment, so every agent of the fleet reports as `loomgraph`."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing-agent")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod")
    telemetry = otlp("http://127.0.0.1:9")  # nothing is exported: no span is made
    named = otlp("http://127.0.0.1:9", service_name="chosen")
    try:
        resource = telemetry.tracer_provider.resource.attributes
        assert resource["deployment.environment"] == "prod"  # the environment is read
        assert resource["service.name"] == "billing-agent"
        assert named.tracer_provider.resource.attributes["service.name"] == "chosen"
    finally:
        telemetry.shutdown(timeout_s=5.0)
        named.shutdown(timeout_s=5.0)


def test_an_agent_file_names_its_service_after_the_environment_then_the_agent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An agent file without `service_name`: `OTEL_SERVICE_NAME` when set, else the agent's
    name; the file's own `service_name` wins over both."""
    path = tmp_path / "agent.yaml"
    made = []

    def service(file_service: str = "") -> str:
        named = f", service_name: {file_service}" if file_service else ""
        path.write_text(
            "schema_version: 1\nname: billing-bot\nmodel: echo\n"
            f"telemetry: {{otlp_endpoint: 'http://127.0.0.1:9'{named}}}\n",
            encoding="utf-8",
        )
        telemetry: Any = Agent.from_file(path).deps.telemetry
        made.append(telemetry)
        return str(telemetry.tracer_provider.resource.attributes["service.name"])

    try:
        monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
        monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
        assert service() == "billing-bot"
        monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
        assert service() == "from-env"
        assert service("from-file") == "from-file"
    finally:
        for telemetry in made:
            telemetry.shutdown(timeout_s=5.0)


class Counted(ScriptedModel):
    """A ScriptedModel that counts the calls made to it."""

    def __init__(self, turns: list[Any], name: str) -> None:
        super().__init__(turns, name=name)
        self.calls = 0

    async def stream(self, request: Any) -> Any:
        self.calls += 1
        async for chunk in super().stream(request):
            yield chunk


async def test_memory_extraction_model_calls_reach_the_token_metrics() -> None:
    """A user turns on fact extraction with a cheaper `extract_model` and watches
    spend through `gen_ai.client.token.usage` / `loom.usage.cost` (docs/observability.md:
    "the token and cost metrics add up to ..."; usage outside a chat span is to be given to
    `record_usage`). Every run then makes one more, paid, model call (extract.py
    `extract_facts`), which streams straight from the model: no `chat` span, no
    `record_usage`, its usage chunk dropped. Its 300 input / 40 output tokens never reach
    telemetry."""
    traced = Traced()
    facts = {"facts": [{"subject": "user", "predicate": "likes", "object": "tea"}]}
    extractor = Counted(
        [
            {
                "tool_calls": [{"tool": "record_facts", "args": facts}],
                "usage": {"input_tokens": 300, "output_tokens": 40},
            }
        ],
        name="extractor",
    )
    agent = Agent(
        "x",
        model=ScriptedModel(["noted"]),
        memory="memory",
        auto_extract=True,
        extract_model=extractor,
        telemetry=traced.telemetry,
    )
    assert (await agent.run("I like tea", user_id="u1")).ok
    await agent.aclose()  # waits for the background extraction
    assert extractor.calls == 1
    by_model = [
        p
        for p in traced.points("gen_ai.client.token.usage")
        if p.attributes.get("gen_ai.request.model") == "extractor"
        and p.attributes["gen_ai.token.type"] == "input"
    ]
    assert sum(p.sum for p in by_model) == 300


async def test_a_denied_tool_call_is_visible_in_the_trace() -> None:
    """An operator debugs why an agent never used its `add` tool. The model asked for
    it (call `c1`), a `deny` rule refused it, and the model answered without it. The trace
    shows `loom.node tools` with nothing under it and nothing on it: no `execute_tool add`
    span (with `error.type` `permission_denied`, the result's own error type) and no event
    naming the call, so the refusal (tool_gate.py returns before the span opens) is only in
    the audit log. A tool that ran and failed does get an ERROR span (`tool_error`)."""
    traced = Traced()
    model = ScriptedModel(
        [{"tool_calls": [{"tool": "add", "args": {"a": 1, "b": 2}, "id": "c1"}]}, "no"]
    )
    agent = Agent(
        "x",
        model=model,
        tools=[add],
        permissions=StandardPermissions(deny=["add"]),
        telemetry=traced.telemetry,
    )
    assert (await agent.run("1+2")).ok
    assert traced.named("loom.node tools"), "the tools node ran"

    def mentions_c1(span: ReadableSpan) -> bool:
        attrs = [dict(span.attributes or {})] + [dict(e.attributes or {}) for e in span.events]
        return any(a.get("gen_ai.tool.call.id") == "c1" for a in attrs)

    denied = [s for s in traced.spans() if mentions_c1(s)]
    assert denied, "no span or event records the denied call"
    assert any(
        (s.attributes or {}).get("error.type") == "permission_denied"
        or any((e.attributes or {}).get("error.type") == "permission_denied" for e in s.events)
        for s in denied
    )


async def test_a_resumed_approval_run_keeps_its_identity_and_nesting(tmp_path: Path) -> None:
    """A run stops for an approval and is resumed with approve=True.
    The resumed run's trace nests `execute_tool add` under `loom.node tools` under the run
    span, the run span keeps the session, user and agent name it started with, and the
    token metric over both halves equals the run's usage (nothing counted twice)."""
    traced = Traced()
    agent = Agent(
        "x",
        model=react_script(),
        tools=[add],
        permissions=StandardPermissions(ask=["add"]),
        runtime=SqliteRuntime(tmp_path / "j.db"),
        telemetry=traced.telemetry,
        name="calc",
    )
    waiting = await agent.run("1+2", session_id="s9", user_id="alice")
    assert waiting.status == "awaiting_approval"
    traced.exporter.clear()
    done = await agent.resume(waiting.run_id, approve=True)
    assert done.status == "completed"
    spans = traced.spans()
    by_id = {s.context.span_id: s for s in spans}

    def parent(span: ReadableSpan) -> str:
        assert span.parent is not None, span.name
        return by_id[span.parent.span_id].name

    (run,) = [s for s in spans if s.parent is None]
    attrs = dict(run.attributes or {})
    assert attrs["gen_ai.agent.name"] == "calc"
    assert attrs["gen_ai.conversation.id"] == "s9"
    assert attrs["user.id"] == "alice"
    assert attrs["loom.run.id"] == waiting.run_id
    (tool,) = traced.named("execute_tool add")
    assert parent(tool) == "loom.node tools"
    assert parent(by_id[tool.parent.span_id]) == run.name  # type: ignore[union-attr]
    inputs = [
        p
        for p in traced.points("gen_ai.client.token.usage")
        if p.attributes["gen_ai.token.type"] == "input"
    ]
    assert sum(p.sum for p in inputs) == done.usage.input_tokens


class _Dated:
    """A model whose provider answers with a dated model name, as OpenAI's and Anthropic's
    do (`gpt-4o` asked, `gpt-4o-2024-08-06` answered)."""

    name = "gpt-4o"

    async def stream(self, request: Any) -> AsyncIterator[dict[str, Any]]:
        yield {"type": "text", "text": "hello"}
        yield {
            "type": "usage",
            "usage": {"input_tokens": 3, "output_tokens": 1},
            "response_model": "gpt-4o-2024-08-06",
        }
        yield {"type": "finish", "finish_reason": "end_turn"}


async def test_chat_metric_points_name_the_model_that_answered() -> None:
    """The conventions recommend `gen_ai.response.model` on the duration and token usage
    points: a dashboard of the dated models a provider served (one asked name, several
    answered) needs it. The chat span carried it; the points did not."""
    traced = Traced()
    agent = Agent("x", model=_Dated(), telemetry=traced.telemetry)
    assert (await agent.run("hi")).ok
    chats = [
        p
        for name in ("gen_ai.client.operation.duration", "gen_ai.client.token.usage")
        for p in traced.points(name)
        if p.attributes["gen_ai.operation.name"] == "chat"
    ]
    assert len(chats) == 3  # one duration, input and output tokens
    for point in chats:
        assert point.attributes["gen_ai.request.model"] == "gpt-4o"
        assert point.attributes["gen_ai.response.model"] == "gpt-4o-2024-08-06"
