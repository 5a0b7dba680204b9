"""Runs, checkpoints and events as the API answers them (JSON-shaped data)."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from loomgraph.agent.answers import expired, pending_of
from loomgraph.agent.run_events import JournalEvent
from loomgraph.protocols import RunRecord, Usage

__all__ = ["QueuedRun", "dumps", "input_of", "run_json", "sse_frame", "usage_of"]


@dataclass(slots=True)
class QueuedRun(RunRecord):
    """A fleet run no worker has started yet, with the input it was submitted with: the
    journal keeps a run's input from its start on (`initial`); until then only its queued
    job holds it, and the server reads it from there (`Service.run`)."""

    submitted_input: str = ""

    @classmethod
    def of(cls, record: RunRecord, submitted_input: str) -> QueuedRun:
        """`record` with the input its job was submitted with."""
        values = {f.name: getattr(record, f.name) for f in fields(record)}
        return cls(**values, submitted_input=submitted_input)


def input_of(record: RunRecord) -> str:
    """The run's input: as its start journaled it, or as it was submitted while it is queued
    ("" when neither is known: a fleet run that never started and whose job is gone)."""
    if record.initial is not None:
        return record.initial.prompt
    return record.submitted_input if isinstance(record, QueuedRun) else ""


def dumps(value: Any) -> str:
    """Compact JSON; anything unknown as its text."""
    return json.dumps(value, separators=(",", ":"), default=str)


def usage_of(record: RunRecord) -> Usage:
    """What a run spent, as its result says (zero while it runs)."""
    return Usage.from_dict((record.result or {}).get("usage") or {}, trusted=True)


def run_json(record: RunRecord, *, detail: bool = False) -> dict[str, Any]:
    """A run record as the API shows it; `detail` adds the result and pending approvals."""
    usage = usage_of(record)
    data: dict[str, Any] = {
        "run_id": record.run_id,
        "status": str(record.status),
        "reason": record.reason,
        "graph": record.graph_name,
        "graph_hash": record.graph_hash,
        "user_id": record.user_id,
        "session_id": record.session_id,
        "parent_run_id": record.parent_run_id,
        "parent_seq": record.parent_seq,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "duration_s": max(0.0, record.updated_at - record.created_at),
        "tokens": usage.input_tokens + usage.output_tokens,
        "cost_usd": usage.cost_usd,
    }
    if detail:
        pending = pending_of(record)
        data["input"] = input_of(record)
        data["result"] = record.result
        # Whether its deadline passed, by the server's clock: past it, an answer is refused
        # and the run is sent on without one (`POST /resume` with no body).
        shown = [] if pending is None else [pending.to_dict() | {"expired": expired(pending)}]
        data["pending"] = shown
    return data


def sse_frame(item: JournalEvent) -> str:
    """One journaled event as a server-sent event, its stable id as the SSE id."""
    event = item.event
    return f"id: {item.id}\nevent: {event.kind}\ndata: {dumps(event.to_dict())}\n\n"
