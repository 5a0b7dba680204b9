"""A whole agent run through the real OpenTelemetry SDK and a real audit log file."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loomgraph import Agent
from loomgraph.models import ScriptedModel
from loomgraph.observability import FileAuditLog, OTelTelemetry


async def add(a: int, b: int) -> int:
    """Add."""
    return a + b


async def test_span_tree_of_a_react_run_and_its_audit_trail(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    audit = FileAuditLog(tmp_path / "audit.jsonl", unsigned=True)
    script = ScriptedModel([{"tool_calls": [{"tool": "add", "args": {"a": 1, "b": 2}}]}, "3"])
    agent = Agent(
        "x", model=script, tools=[add], telemetry=OTelTelemetry(provider), audit_log=audit
    )
    result = await agent.run("1+2?", user_id="alice", session_id="s1")
    assert result.ok
    spans = {s.name: s for s in exporter.get_finished_spans()}
    by_id = {s.context.span_id: s for s in exporter.get_finished_spans()}

    def parent(name: str) -> str:
        span = spans[name]
        assert span.parent is not None, name
        return by_id[span.parent.span_id].name

    assert spans["loom.run"].parent is None
    assert spans["loom.run"].attributes["gen_ai.conversation.id"] == "s1"
    assert parent("loom.node model") == "loom.run"
    assert parent("loom.node tools") == "loom.run"
    assert parent("chat scripted") == "loom.node model"
    assert parent("execute_tool add") == "loom.node tools"
    assert spans["chat scripted"].attributes["gen_ai.request.model"] == "scripted"
    assert spans["chat scripted"].attributes["gen_ai.usage.input_tokens"] == 10
    assert spans["execute_tool add"].attributes["gen_ai.tool.name"] == "add"
    actions = [e["action"] for e in audit.entries()]
    assert actions[0] == "run_started" and actions[-1] == "run_completed"
    assert actions.count("model_call") == 2
    assert audit.verify().ok
