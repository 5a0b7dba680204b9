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
NODE_RETRY: Final = "node_retry"  # a node failed and its `retry` policy runs it again
MODEL_RETRY: Final = "model_retry"  # a model stream broke; the step is tried again
EFFECT_UNKNOWN_AFTER_CRASH: Final = "effect_unknown_after_crash"  # intent without outcome
PERMISSION_DECISION: Final = "permission_decision"  # allow/deny/ask, naming the rule
BUDGET_WARNING: Final = "budget_warning"  # spending passed `warn_at` of a cap
BUDGET_EXCEEDED: Final = "budget_exceeded"  # a reservation was refused; the run stops
TOOL_PROGRESS: Final = "tool_progress"  # a running tool reported progress (ToolContext)
# Heard only by the hooks' on_event: the run's own stream has ended by then.
MEMORY_EXTRACTION_FAILED: Final = "memory_extraction_failed"

# Every kind loomgraph itself emits.
EVENT_KINDS: frozenset[str] = frozenset(
    {
        RUN_STARTED,
        NODE_STARTED,
        MODEL_CHUNK,
        TOOL_CALL,
        TOOL_RESULT,
        NODE_COMPLETED,
        ERROR,
        RUN_COMPLETED,
        NODE_RETRY,
        MODEL_RETRY,
        EFFECT_UNKNOWN_AFTER_CRASH,
        PERMISSION_DECISION,
        BUDGET_WARNING,
        TOOL_PROGRESS,
        BUDGET_EXCEEDED,
        MEMORY_EXTRACTION_FAILED,
    }
)


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
