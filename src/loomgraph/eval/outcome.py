"""`CaseOutcome`: what one run of one case did, as the evaluators see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loomgraph.eval.trajectory import CallRecord
from loomgraph.protocols import Usage

__all__ = ["CaseOutcome"]


@dataclass(slots=True)
class CaseOutcome:
    """One run of one case under one strategy: its answer, tool calls, usage and timing."""

    case_id: str
    strategy: str
    repeat: int
    run_id: str | None
    status: str
    answer: str | None = None
    calls: list[CallRecord] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0
    node_visits: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        """(strategy, case id, repeat): what identifies the run within an evaluation."""
        return (self.strategy, self.case_id, self.repeat)

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped data."""
        return {
            "case_id": self.case_id,
            "strategy": self.strategy,
            "repeat": self.repeat,
            "run_id": self.run_id,
            "status": self.status,
            "answer": self.answer,
            "calls": [c.to_dict() for c in self.calls],
            "usage": self.usage.to_dict(),
            "latency_s": self.latency_s,
            "node_visits": dict(self.node_visits),
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseOutcome:
        """An outcome from `to_dict()`'s shape."""
        values = dict(data)
        values["calls"] = [CallRecord.from_dict(c) for c in values["calls"]]
        values["usage"] = Usage.from_dict(values["usage"], trusted=True)
        return cls(**values)
