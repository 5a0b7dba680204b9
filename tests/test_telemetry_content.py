"""No content on spans or in the audit log without content capture, also when a run fails.

Secrets are planted in the prompt, the instructions, tool arguments, tool output and the
model's answer; a failure whose message quotes one of them (a tool's rejected arguments, an
answer that never fits its schema, a provider error quoting the prompt) must leave only its
type and a content-free description on the spans, and a content-free `run_completed.reason`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from pydantic import BaseModel

from loomgraph import Agent
from loomgraph.errors import NodeError
from loomgraph.models import ScriptedModel
from loomgraph.models.scripted import as_turn
from loomgraph.nodes.structured import OutputValidationError
from loomgraph.observability import FileAuditLog, OTelTelemetry
from loomgraph.protocols import ModelRequest

SECRETS = {
    "prompt": "SECRET-PROMPT-111",
    "system": "SECRET-SYSTEM-222",
    "args": "SECRET-ARGS-333",
    "output": "SECRET-TOOLOUT-444",
    "answer": "SECRET-ANSWER-555",
}


def traced(capture: bool = False) -> tuple[InMemorySpanExporter, OTelTelemetry]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, OTelTelemetry(provider, capture_content=capture)


def span_text(span: ReadableSpan) -> str:
    """Everything a span holds that a backend shows: attributes, events, status."""
    parts: list[Any] = [span.name, dict(span.attributes or {}), span.status.description]
    parts += [(event.name, dict(event.attributes or {})) for event in span.events]
    return json.dumps(parts, default=str)


def leaks(spans: tuple[ReadableSpan, ...]) -> list[tuple[str, str]]:
    return [
        (label, span.name)
        for span in spans
        for label, secret in SECRETS.items()
        if secret in span_text(span)
    ]


async def vault(code: str) -> str:
    """Read the vault."""
    return f"vault says {SECRETS['output']}"


async def counter(n: int) -> str:
    """Count."""
    return str(n)


async def raising(code: str) -> str:
    """A tool that fails, echoing its input as many libraries do."""
    raise ValueError(f"bad code {code!r}")


class Answer(BaseModel):
    value: int


def bad_args(request: ModelRequest) -> Any:
    """Arguments the tool rejects, every turn: the run fails with ToolArgsInvalid."""
    return as_turn(
        {"tool_calls": [{"tool": "counter", "args": {"n": SECRETS["args"]}}]}, request.call_index
    )


def unfit(request: ModelRequest) -> Any:
    """An answer that never fits the schema."""
    return as_turn(f"not json {SECRETS['answer']}", request.call_index)


async def run_scenario(name: str, telemetry: OTelTelemetry, audit: Any = None) -> Any:
    extra: dict[str, Any] = {"telemetry": telemetry}
    if audit is not None:
        extra["audit_log"] = audit
    if name == "tool":
        model = ScriptedModel(
            [{"tool_calls": [{"tool": "vault", "args": {"code": SECRETS["args"]}}]}, "done"]
        )
        return await Agent(SECRETS["system"], model=model, tools=[vault], **extra).run(
            SECRETS["prompt"]
        )
    if name == "raising_tool":
        model = ScriptedModel(
            [{"tool_calls": [{"tool": "raising", "args": {"code": SECRETS["args"]}}]}, "ok"]
        )
        return await Agent("x", model=model, tools=[raising], **extra).run(SECRETS["prompt"])
    if name == "invalid_args":
        model = ScriptedModel(bad_args)
        return await Agent("x", model=model, tools=[counter], **extra).run(SECRETS["prompt"])
    if name == "unfit_answer":
        with pytest.raises(OutputValidationError):
            await Agent("x", model=ScriptedModel(unfit), **extra).run(
                SECRETS["prompt"], output_schema=Answer
            )
        return None
    assert name == "model_error"
    model = ScriptedModel([RuntimeError(f"context too long: '{SECRETS['prompt']}'")])
    return await Agent("x", model=model, **extra).run(SECRETS["prompt"])


@pytest.mark.parametrize(
    "scenario", ["tool", "raising_tool", "invalid_args", "unfit_answer", "model_error"]
)
async def test_no_span_holds_content_without_capture(scenario: str) -> None:
    exporter, telemetry = traced()
    await run_scenario(scenario, telemetry)
    spans = exporter.get_finished_spans()
    assert spans
    assert leaks(spans) == []


async def test_a_failed_span_says_what_failed_without_its_message() -> None:
    exporter, telemetry = traced()
    result = await run_scenario("invalid_args", telemetry)
    assert result.status == "failed"
    # Three visits of `tools`: the model is told twice, the third time the node fails.
    *told, node = [s for s in exporter.get_finished_spans() if s.name == "loom.node tools"]
    assert len(told) == 2
    assert node.status.status_code is StatusCode.ERROR
    assert node.status.description == "ToolArgsInvalid"
    attributes = dict(node.attributes or {})
    assert attributes["error.type"] == "loomgraph.engine.tool_gate.ToolArgsInvalid"
    (event,) = node.events
    # The exception event names the type only: its message and stack trace can hold content.
    assert event.name == "exception"
    assert dict(event.attributes or {}) == {
        "exception.type": "loomgraph.engine.tool_gate.ToolArgsInvalid"
    }


# Not `unfit_answer`: its message says where and what did not fit, never the answer.
@pytest.mark.parametrize("scenario", ["invalid_args", "model_error"])
async def test_with_capture_the_error_message_is_recorded(scenario: str) -> None:
    exporter, telemetry = traced(capture=True)
    await run_scenario(scenario, telemetry)
    # The spans an exception escaped from record it whole: message and stack trace.
    raised = [s for s in exporter.get_finished_spans() if s.events]
    assert raised
    for span in raised:
        assert leaks((span,))
        ((event,),) = [span.events]
        assert event.name == "exception"
        assert "exception.stacktrace" in (event.attributes or {})


def test_a_raw_span_keeps_no_exception_message_without_capture() -> None:
    exporter, telemetry = traced()
    with pytest.raises(KeyError), telemetry.span("custom", {}):
        raise KeyError(SECRETS["args"])
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "KeyError"
    assert dict(span.attributes or {}) == {"error.type": "KeyError"}
    assert leaks((span,)) == []


def test_error_summary_names_the_node_and_the_error_type_only() -> None:
    from loomgraph.errors import error_summary

    inner = NodeError("plan/model", RuntimeError(SECRETS["prompt"]))
    outer = NodeError("plan", inner)
    assert error_summary(outer) == "node 'plan' failed: node 'plan/model' failed: RuntimeError"
    assert error_summary(ValueError(SECRETS["args"])) == "ValueError"


def entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("scenario", ["invalid_args", "unfit_answer", "model_error"])
async def test_the_audit_reason_holds_no_content_without_capture(
    tmp_path: Path, scenario: str
) -> None:
    _, telemetry = traced()
    audit = FileAuditLog(tmp_path / "audit.jsonl", unsigned=True)
    await run_scenario(scenario, telemetry, audit)
    (completed,) = [e for e in entries(tmp_path / "audit.jsonl") if e["action"] == "run_completed"]
    payload = completed["payload"]
    assert payload["status"] == "failed"
    assert not [s for s in SECRETS.values() if s in json.dumps(payload)]
    expected = {
        "invalid_args": "node 'tools' failed: ToolArgsInvalid",
        "unfit_answer": "node 'structured_output' failed: OutputValidationError",
        "model_error": "node 'model' failed: RuntimeError",
    }
    assert payload["reason"] == expected[scenario]


async def test_the_audit_reason_is_whole_with_capture(tmp_path: Path) -> None:
    _, telemetry = traced()
    audit = FileAuditLog(tmp_path / "audit.jsonl", unsigned=True, capture_content=True)
    result = await run_scenario("invalid_args", telemetry, audit)
    (completed,) = [e for e in entries(tmp_path / "audit.jsonl") if e["action"] == "run_completed"]
    assert completed["payload"]["reason"] == result.reason
    assert SECRETS["args"] in completed["payload"]["reason"]
