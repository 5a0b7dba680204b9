"""`RunResult`: how a run ended."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from loomgraph.protocols import BudgetExceeded, ModelError, Pending, RunStatus, Usage


@dataclass(slots=True)
class RunResult:
    """How a run ended: its answer, status, usage and timings."""

    output: Any
    run_id: str
    session_id: str | None
    user_id: str | None
    status: RunStatus
    reason: str = ""
    parsed: Any = None
    turns: int = 0
    node_visits: dict[str, int] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    timings: dict[str, float] = field(default_factory=dict)
    # What a run that stopped waits for: an approval of one call, or a value.
    pending: Pending | None = None

    def __post_init__(self) -> None:
        self.status = RunStatus(self.status)

    @property
    def ok(self) -> bool:
        """True when the run completed."""
        return self.status == RunStatus.COMPLETED

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-shaped data (what the journal stores)."""
        # Shallow on purpose (asdict deep-copies, and this runs twice per run): every other
        # field is JSON-shaped already, and the result is not changed after the run.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["status"] = str(self.status)
        data["usage"] = self.usage.to_dict()
        data["pending"] = None if self.pending is None else self.pending.to_dict()
        if self.parsed is not None and hasattr(self.parsed, "model_dump"):
            data["parsed"] = self.parsed.model_dump(mode="json")
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        """A result from `to_dict()`'s shape, as the journal keeps it."""
        values = dict(data)
        values["usage"] = Usage.from_dict(values.get("usage") or {}, trusted=True)
        pending = values.get("pending")
        values["pending"] = None if pending is None else Pending.from_dict(pending)
        return cls(**values)


def failed_step_usage(error: BaseException | None) -> Usage:
    """What the step a run failed on was billed (its model attempts, carried on the error: a
    `ModelError`, or the `BudgetExceeded` that refused a retry): the step wrote no state, so
    its usage is not in the state's. For a run that raised, read from its journal (a run
    that ended counts it through its scope, `RunScope.failed_usage`)."""
    while error is not None and not isinstance(error, ModelError | BudgetExceeded):
        error = getattr(error, "cause", None) or error.__cause__
    return error.usage if error is not None else Usage()
