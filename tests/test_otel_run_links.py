"""A run's resumes are traced as run spans of their own (another process, days later, another
trace); each links to the run's first run span, whose W3C traceparent the journal keeps with
the run's start. A fork's first span is its own start; a start traced with nothing, or a
traceparent the journal holds that is no traceparent, links nothing and fails nothing."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loomgraph import Agent, tool
from loomgraph.models import ScriptedModel
from loomgraph.observability import RUN_SPAN, LinkKind, OTelTelemetry
from loomgraph.protocols import RunStatus, Telemetry
from loomgraph.runtime.sqlite import SqliteRuntime

paid: list[int] = []


@tool(destructive=True)
def pay(amount: int) -> str:
    """Pay an amount."""
    paid.append(amount)
    return f"paid {amount}"


def _script() -> ScriptedModel:
    return ScriptedModel(
        [{"tool_calls": [{"id": "c1", "tool": "pay", "args": {"amount": 5}}]}, "done"]
    )


def _traced() -> tuple[OTelTelemetry, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return OTelTelemetry(provider), exporter


def _agent(path: Path, telemetry: Telemetry | None) -> Agent:
    return Agent(
        "payments",
        model=_script(),
        tools=[pay],
        runtime=SqliteRuntime(str(path)),
        telemetry=telemetry,
    )


def _run_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == RUN_SPAN]


async def _resumed_elsewhere(journal: Path, run_id: str) -> ReadableSpan:
    """Resume `run_id`, approved, by another Agent with a tracer of its own (another
    process's, so another trace) and return the resume's one run span."""
    telemetry, exporter = _traced()
    again = _agent(journal, telemetry)
    done = await again.resume(run_id, approve=True)
    await again.aclose()
    assert done.status == RunStatus.COMPLETED and paid == [5]
    [resumed] = _run_spans(exporter)
    return resumed


@pytest.fixture(autouse=True)
def _nothing_paid() -> None:
    paid.clear()


async def test_a_resumes_run_span_links_to_the_runs_first_one(tmp_path: Path) -> None:
    """Stopped at an approval, journaled, and resumed by another Agent (another process's
    tracer, so another trace): the resume's run span links to the first one."""
    journal = tmp_path / "journal.db"
    first_telemetry, first_exporter = _traced()
    first = _agent(journal, first_telemetry)
    waiting = await first.run("pay 5")
    assert waiting.status == RunStatus.AWAITING_APPROVAL
    await first.aclose()
    [started] = _run_spans(first_exporter)
    resumed = await _resumed_elsewhere(journal, waiting.run_id)
    assert started.context is not None and resumed.context is not None
    assert resumed.context.trace_id != started.context.trace_id  # unrelated but for the link
    [link] = resumed.links
    assert link.context.trace_id == started.context.trace_id
    assert link.context.span_id == started.context.span_id
    assert dict(link.attributes or {}) == {"loom.link.kind": LinkKind.RUN_START.value}
    assert not started.links  # a run's first span links to nothing


async def test_a_forks_resumes_link_to_the_forks_first_span(tmp_path: Path) -> None:
    journal = tmp_path / "journal.db"
    telemetry, exporter = _traced()
    agent = _agent(journal, telemetry)
    waiting = await agent.run("pay 5")
    fork = await agent.fork(waiting.run_id, at=0)
    assert fork.status == RunStatus.AWAITING_APPROVAL, fork.reason
    done = await agent.resume(fork.run_id, approve=True)
    await agent.aclose()
    assert done.status == RunStatus.COMPLETED
    _, fork_start, fork_resume = _run_spans(exporter)
    assert fork_start.context is not None
    assert not fork_start.links
    [link] = fork_resume.links
    assert link.context.span_id == fork_start.context.span_id


async def test_a_run_started_untraced_is_resumed_traced_with_no_link(tmp_path: Path) -> None:
    journal = tmp_path / "journal.db"
    first = _agent(journal, None)
    waiting = await first.run("pay 5")
    await first.aclose()
    resumed = await _resumed_elsewhere(journal, waiting.run_id)
    assert not resumed.links


async def test_a_journaled_traceparent_that_is_none_links_nothing_and_fails_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The journal's copy is data like any other: a value that is no W3C traceparent (a
    journal written by hand, an edit) is reported on the telemetry logger, and the run goes
    on."""
    journal = tmp_path / "journal.db"
    telemetry, exporter = _traced()
    agent = _agent(journal, telemetry)
    waiting = await agent.run("pay 5")
    runtime = agent.deps.runtime
    record = await runtime.load_run(waiting.run_id)
    assert record is not None and record.initial is not None and record.initial.trace
    assert record.initial.trace.startswith("00-")
    await agent.aclose()

    import sqlite3

    with sqlite3.connect(journal) as db:  # the run's start as the journal keeps it
        db.execute(
            "UPDATE runs SET initial = json_set(initial, '$.trace', 'not-a-traceparent') "
            "WHERE run_id = ?",
            (waiting.run_id,),
        )
    caplog.set_level(logging.WARNING, logger="loomgraph.telemetry")
    again = _agent(journal, telemetry)
    done = await again.resume(waiting.run_id, approve=True)
    await again.aclose()
    assert done.status == RunStatus.COMPLETED and paid == [5]
    resumed = _run_spans(exporter)[-1]
    assert not resumed.links
    assert any("link a span" in r.getMessage() for r in caplog.records)


def test_a_run_start_keeps_its_trace_through_the_journals_json() -> None:
    from loomgraph.protocols import RunStart

    start = RunStart({"input": "x"}, trace="00-" + "1" * 32 + "-" + "2" * 16 + "-01")
    assert RunStart.from_dict(start.to_dict()) == start
    untraced = dataclasses.replace(start, trace=None)
    assert "trace" not in untraced.to_dict()
    assert RunStart.from_dict(untraced.to_dict()) == untraced
