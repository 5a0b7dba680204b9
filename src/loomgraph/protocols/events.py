"""Events: what a run tells its consumer, in order, as it goes."""

from __future__ import annotations

from typing import Any, Final, NamedTuple

# The kinds a run emits. Third-party node kinds may emit their own.
RUN_STARTED: Final = "run_started"
NODE_STARTED: Final = "node_started"
MODEL_CHUNK: Final = "model_chunk"
TOOL_CALL: Final = "tool_call"
TOOL_RESULT: Final = "tool_result"
NODE_COMPLETED: Final = "node_completed"
ERROR: Final = "error"
RUN_COMPLETED: Final = "run_completed"
PERMISSION_DECISION: Final = "permission_decision"
BUDGET_EXCEEDED: Final = "budget_exceeded"
MODEL_RETRY: Final = "model_retry"
NODE_RETRY: Final = "node_retry"
EFFECT_UNKNOWN_AFTER_CRASH: Final = "effect_unknown_after_crash"


class Event(NamedTuple):
    """One thing that happened in a run; immutable.

    `seq` is the journal sequence number of the transition the event belongs to, so an
    event can be traced to the checkpoint that follows it. (A named tuple rather than a
    frozen dataclass: a run makes several events a step, and this is ~5x cheaper to build.)
    """

    kind: str
    payload: dict[str, Any]
    run_id: str
    seq: int
    node: str | None
    user_id: str | None
    session_id: str | None
    at: float

    def to_dict(self) -> dict[str, Any]:
        """The event as plain JSON-shaped data."""
        return self._asdict()
