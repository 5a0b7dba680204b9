"""Events: what a run tells its consumer, in order, as it goes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

# The kinds a run emits. Third-party node kinds may emit their own.
RUN_STARTED: Final = "run_started"
NODE_STARTED: Final = "node_started"
MODEL_CHUNK: Final = "model_chunk"
TOOL_CALL: Final = "tool_call"
TOOL_RESULT: Final = "tool_result"
NODE_COMPLETED: Final = "node_completed"
ERROR: Final = "error"
RUN_COMPLETED: Final = "run_completed"


@dataclass(slots=True, frozen=True)
class Event:
    """One thing that happened in a run.

    `seq` is the journal sequence number of the transition the event belongs to, so an
    event can be traced to the checkpoint that follows it.
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
        return asdict(self)
