"""Events: what a run tells its consumer, in order, as it goes."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final, NamedTuple

from loomgraph.protocols.idle import does_nothing, is_idle

# The kinds a run emits. Third-party node kinds may emit their own.
RUN_STARTED: Final = "run_started"
NODE_STARTED: Final = "node_started"
MODEL_CHUNK: Final = "model_chunk"  # provisional text of one model call (payload `call_id`)
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
OUTPUT_VOID: Final = "output_void"  # the chunks of `call_id` sent so far stand for nothing
TOOL_PROGRESS: Final = "tool_progress"  # a running tool reported progress (ToolContext)
# Heard only by the hooks' on_event: the run's own stream has ended by then.
MEMORY_EXTRACTION_FAILED: Final = "memory_extraction_failed"
# Memory could not keep a finished run's episode; the run's result is returned all the same.
MEMORY_REMEMBER_FAILED: Final = "memory_remember_failed"

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
        MEMORY_REMEMBER_FAILED,
        OUTPUT_VOID,
    }
)

# The kinds that are *provisional*: what they report may be missing from the journal after a
# crash (a model's streamed text, a retry, a warning, an error a resumed run tries again).
# Every other kind is emitted after the journal write that records it, or reports what the
# resumed run records again; docs/runtime.md ("What a consumer sees") lists each kind's record.
PROVISIONAL_KINDS: frozenset[str] = frozenset(
    {
        MODEL_CHUNK,
        MODEL_RETRY,
        NODE_RETRY,
        OUTPUT_VOID,
        ERROR,
        BUDGET_WARNING,
        BUDGET_EXCEEDED,
        MEMORY_EXTRACTION_FAILED,
        MEMORY_REMEMBER_FAILED,
    }
)


class VoidReason(StrEnum):
    """Why an `output_void` event voids the chunks one model call streamed so far."""

    # The call is run again after a crash (or an earlier stop) left it without an outcome.
    RECOVERED = "recovered"
    # The stream broke after chunks went out; the call is tried again at once (`model_retry`).
    RETRY = "retry"
    # The call failed: no answer of it is journaled.
    FAILED = "failed"
    # The call was cut off (a node timeout); the node visit makes another call.
    ABANDONED = "abandoned"


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

    @property
    def provisional(self) -> bool:
        """Whether what the event reports may be missing from the journal after a crash (a
        model chunk, voided by a later `output_void` of its `call_id`; see PROVISIONAL_KINDS)."""
        return self.kind in PROVISIONAL_KINDS

    def to_dict(self) -> dict[str, Any]:
        """The event as plain JSON-shaped data."""
        return self._asdict()


def drops_events(sink: Any) -> Any:
    """Mark an `on_event` callback that does nothing with events (a no-op hooks object's), so
    that a run whose only consumer it is builds no event at all."""
    return does_nothing(sink)


def hears_events(sink: Any) -> bool:
    """Whether a sink may do something with events: False only for one marked `drops_events`
    (a bound method reads the mark of its function)."""
    return not is_idle(sink)
