"""The journal of runs: run records, transitions, effects, and the protocols that keep them.

`RunWriter` is what the interpreter and a session write through, `RunReader` what the agent
and the CLI read through; a `Runtime` is both, and can be closed.
"""

from __future__ import annotations

import enum
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from loomgraph.errors import LoomgraphError
from loomgraph.protocols.pending import Pending
from loomgraph.protocols.usage import Usage

__all__ = [
    "FINAL_STATUSES",
    "EffectRecord",
    "EffectStatus",
    "Lease",
    "PinnedGraph",
    "RunLeases",
    "RunReader",
    "RunRecord",
    "RunStart",
    "RunStatus",
    "RunStopped",
    "RunWriter",
    "Runtime",
    "Transition",
    "UnknownRun",
    "current_fence",
]


class RunStatus(enum.StrEnum):
    """Where a run stands; the values are what journals and JSON keep."""

    # Submitted to a worker fleet (`agent.submit`), not started yet: no worker took it.
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    LIMIT_REACHED = "limit_reached"
    BUDGET_EXHAUSTED = "budget_exhausted"
    INTERRUPTED = "interrupted"
    AWAITING_APPROVAL = "awaiting_approval"
    CANCELLED = "cancelled"
    # Given up after too many failed recoveries: kept, listed, resumed only by `retry`.
    DEAD_LETTER = "dead_letter"

    @property
    def final(self) -> bool:
        """True when the run ended for good: resuming it returns its result, runs nothing."""
        return self in FINAL_STATUSES

    @property
    def in_progress(self) -> bool:
        """True while the run is queued or running: it has not stopped, for now or for good."""
        return self in (RunStatus.QUEUED, RunStatus.RUNNING)


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
    # What the run started from, so a resume or a fork can rebuild its first state.
    initial: RunStart | None = None
    # How many resumes of this run after a crash or failure have begun (dead letters).
    recoveries: int = 0

    @property
    def agent_name(self) -> str:
        """The name of the Agent that started the run ("": unnamed, or not recorded)."""
        return self.initial.agent if self.initial is not None else ""


@dataclass(slots=True, frozen=True)
class RunStart:
    """What a run started from: its first state values, its system prompt, the permission
    policy it is pinned to (`{"fingerprint": ..., "policy": ...}`, with the `budget` caps and
    the `audit_log` it is pinned to when it had them: `governance_state`), for a fork the node it
    starts at and the visits its checkpoint had counted (None: the graph's entry, none), and
    the name of the Agent that started it ("": unnamed, or kept before names were)."""

    state: dict[str, Any]
    system: str = ""
    policy: dict[str, Any] | None = None
    node: str | None = None
    visits: dict[str, int] | None = None
    agent: str = ""
    # The untrusted parts of `system` (`Seed.untrusted`), for a resume or fork to count too.
    untrusted: tuple[str, ...] = ()
    # The W3C traceparent of the run span that started the run, for its resumes' spans to
    # link to (None: not traced, or a fork a fleet worker started).
    trace: str | None = None

    @property
    def prompt(self) -> str:
        """The run's input, its first user message."""
        return str(self.state.get("input", ""))

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape the journal keeps."""
        data: dict[str, Any] = {"state": self.state, "system": self.system}
        if self.policy is not None:
            data["policy"] = self.policy
        if self.node is not None:
            data["node"], data["visits"] = self.node, self.visits or {}
        if self.agent:
            data["agent"] = self.agent
        if self.untrusted:
            data["untrusted"] = list(self.untrusted)
        if self.trace:
            data["trace"] = self.trace
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunStart:
        """A start the journal kept."""
        visits = data.get("visits")
        return cls(
            dict(data.get("state") or {}),
            str(data.get("system", "")),
            data.get("policy"),
            data.get("node"),
            {str(k): int(v) for k, v in visits.items()} if isinstance(visits, dict) else None,
            str(data.get("agent") or ""),
            tuple(str(t) for t in data.get("untrusted") or ()),
            str(data["trace"]) if data.get("trace") else None,
        )


class RunStopped(LoomgraphError):
    """Raised inside a node to end the run with a non-failure status: waiting for an approval
    or for a value (`pending` says which)."""

    def __init__(self, status: RunStatus, reason: str, pending: Pending | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.pending = pending


class StopDeferred(RunStopped):
    """A stop that waits its turn: a parallel branch asked for approval while a sibling's
    request already stops the run (a run shows one request at a time). Nothing of it was
    journaled; the resume that reaches it asks again, its deadline starting then. Where
    branches stop together, another stop is the one the run ends with."""


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
    # True once the journal found the effect unfinished after a crash (it was then
    # `unknown_after_crash`); it stays True after the re-execution ends it `done`.
    recovered: bool = False


@dataclass(slots=True, frozen=True)
class PinnedGraph:
    """The exact graph runs started with, kept once per hash (`RunRecord.graph_hash`).

    `spec` is the graph as plain data (`{"graph": ..., "children": {ref: {...}}}`: the
    graph's own spec and, under each name its nodes run, the child graph's, nested the same
    way), so it can be compiled again wherever the journal is read.
    """

    hash: str
    name: str
    spec: dict[str, Any]


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

    # Every how many transitions the writer wants a full-state snapshot with one (0: never);
    # the rest carry only their patch.
    snapshot_every: int

    async def start_run(self, run: RunRecord) -> None:
        """Record a new run; `RunExists` (a `RunConflict`), writing nothing, when a run with
        its id is journaled already."""
        ...

    async def put_graph(self, graph: PinnedGraph) -> None:
        """Keep a graph runs start with, under its hash; a hash kept already stays as it is."""
        ...

    async def move_run(self, run_id: str, graph: PinnedGraph) -> None:
        """Pin a run to another graph (kept as by `put_graph`): its later resumes go on
        with that one."""
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

    async def graph(self, graph_hash: str) -> PinnedGraph | None:
        """The graph kept under a hash, or None (a run made before graphs were kept)."""
        ...

    async def effects(self, run_id: str) -> list[EffectRecord]:
        """Every effect of a run, in the order they began."""
        ...

    async def effect(self, run_id: str, key: str) -> EffectRecord | None:
        """One effect of a run by its key, or None."""
        ...

    async def runs(
        self, user_id: str | None = None, *, status: RunStatus | None = None
    ) -> list[RunRecord]:
        """Runs, oldest first, optionally of one user, in one status."""
        ...


@runtime_checkable
class Runtime(RunWriter, RunReader, Protocol):
    """The journal of runs: transitions as deltas, and side effects as intent/outcome."""

    async def close(self) -> None:
        """Release connections; the next use opens them again."""
        ...


@dataclass(frozen=True, slots=True)
class Lease:
    """Who may advance a run, until when (seconds since the epoch, database clock), and the
    fencing token of this holding: it grows with every new holder of the run's lease."""

    run_id: str
    owner: str
    expires_at: float
    token: int = 0


# The lease the current task holds, set by whoever holds it (the agent's `hold_lease`):
# a journal with leases makes every write to that run conditional on its token being
# current, so a worker that lost the lease (a zombie) writes nothing.
current_fence: ContextVar[Lease | None] = ContextVar("loomgraph_current_fence", default=None)


@runtime_checkable
class RunLeases(Protocol):
    """A journal shared by many workers: a run is advanced by the one holding its lease."""

    lease_seconds: float

    async def acquire_lease(
        self, run_id: str, owner: str, ttl: float | None = None, *, take_from: str | None = None
    ) -> Any:
        """Take the run's lease, or raise when another live owner holds it; `take_from`
        names an owner known to be dead whose lease may be taken before it expires."""
        ...

    async def renew_lease(self, run_id: str, owner: str, ttl: float | None = None) -> Any:
        """Extend a lease this owner holds, or raise when it was lost."""
        ...

    async def release_lease(self, run_id: str, owner: str) -> bool:
        """Give the lease back."""
        ...
