"""The journal of runs: run records, transitions, effects, and the protocols that keep them.

`RunWriter` is what the interpreter and a session write through, `RunReader` what the agent
and the CLI read through; a `Runtime` is both, and can be closed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from loomgraph.errors import LoomgraphError
from loomgraph.protocols.usage import Usage

__all__ = [
    "FINAL_STATUSES",
    "EffectRecord",
    "EffectStatus",
    "RunLeases",
    "RunReader",
    "RunRecord",
    "RunStatus",
    "RunWriter",
    "Runtime",
    "Transition",
    "UnknownRun",
]


class RunStatus(enum.StrEnum):
    """Where a run stands; the values are what journals and JSON keep."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    LIMIT_REACHED = "limit_reached"
    BUDGET_EXHAUSTED = "budget_exhausted"
    INTERRUPTED = "interrupted"
    AWAITING_APPROVAL = "awaiting_approval"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """True when the run ended for good: resuming it returns its result, runs nothing."""
        return self in FINAL_STATUSES


# The one definition of a final status. A failed, interrupted, cancelled or waiting run
# may be resumed; these may not.
FINAL_STATUSES: frozenset[RunStatus] = frozenset(
    {RunStatus.COMPLETED, RunStatus.LIMIT_REACHED, RunStatus.BUDGET_EXHAUSTED}
)


class EffectStatus(enum.StrEnum):
    """Where a journaled side effect stands."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    UNKNOWN_AFTER_CRASH = "unknown_after_crash"


@dataclass(slots=True)
class RunRecord:
    """The identity and status of one run, as the journal keeps it."""

    run_id: str
    graph_name: str
    graph_hash: str
    user_id: str | None
    session_id: str | None
    status: RunStatus = RunStatus.RUNNING
    reason: str = ""
    parent_run_id: str | None = None
    parent_seq: int | None = None
    deadline: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    result: dict[str, Any] | None = None
    # What the run started from: {"state": first state values, "system": system prompt}.
    initial: dict[str, Any] | None = None


@dataclass(slots=True)
class Transition:
    """One step of a run: the node that ran, the patch it made and the edge taken after it."""

    run_id: str
    seq: int
    node: str
    visit: int
    patch: dict[str, Any]
    next_node: str
    usage: Usage
    at: float
    # The whole state after this transition, every few transitions, so a resume or a fork
    # need not replay every patch from the start.
    snapshot: dict[str, Any] | None = None


@dataclass(slots=True)
class EffectRecord:
    """A side effect journaled as intent before and outcome after."""

    run_id: str
    key: str
    kind: str
    intent: dict[str, Any]
    outcome: dict[str, Any] | None = None
    status: EffectStatus = EffectStatus.PENDING
    attempts: int = 1


class UnknownRun(LoomgraphError, KeyError):
    """No run with this id is in the journal."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"unknown run {run_id!r}")
        self.run_id = run_id

    def __str__(self) -> str:
        return str(self.args[0])


@runtime_checkable
class RunWriter(Protocol):
    """What a run writes as it goes: its record, transitions as deltas, effects, its end."""

    async def start_run(self, run: RunRecord) -> None:
        """Record a new run."""
        ...

    async def append_transition(self, transition: Transition) -> None:
        """Append one transition; it is durable when this returns."""
        ...

    async def begin_effect(self, effect: EffectRecord) -> EffectRecord | None:
        """Journal an intent; return the earlier record when this key was seen before."""
        ...

    async def end_effect(
        self, run_id: str, key: str, outcome: dict[str, Any], status: EffectStatus
    ) -> None:
        """Journal the outcome of an effect."""
        ...

    async def finish_run(
        self, run_id: str, status: RunStatus, reason: str, result: dict[str, Any] | None
    ) -> None:
        """Record how a run ended."""
        ...


@runtime_checkable
class RunReader(Protocol):
    """What the journal tells about runs: records, transitions and effects."""

    async def load_run(self, run_id: str) -> RunRecord | None:
        """A run's record, or None."""
        ...

    async def transitions(self, run_id: str) -> list[Transition]:
        """Every transition of a run, in order."""
        ...

    async def effects(self, run_id: str) -> list[EffectRecord]:
        """Every effect of a run, in the order they began."""
        ...

    async def effect(self, run_id: str, key: str) -> EffectRecord | None:
        """One effect of a run by its key, or None."""
        ...

    async def runs(self, user_id: str | None = None) -> list[RunRecord]:
        """Runs, oldest first, optionally of one user."""
        ...


@runtime_checkable
class Runtime(RunWriter, RunReader, Protocol):
    """The journal of runs: transitions as deltas, and side effects as intent/outcome."""

    async def close(self) -> None:
        """Release connections; the next use opens them again."""
        ...


@runtime_checkable
class RunLeases(Protocol):
    """A journal shared by many workers: a run is advanced by the one holding its lease."""

    lease_seconds: float

    async def acquire_lease(self, run_id: str, owner: str, ttl: float | None = None) -> Any:
        """Take the run's lease, or raise when another live owner holds it."""
        ...

    async def renew_lease(self, run_id: str, owner: str, ttl: float | None = None) -> Any:
        """Extend a lease this owner holds, or raise when it was lost."""
        ...

    async def release_lease(self, run_id: str, owner: str) -> bool:
        """Give the lease back."""
        ...
