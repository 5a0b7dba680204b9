"""Checkpoints: rebuild a run's state at any seq from its journal, and compare two of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loomgraph.agent.journal_rows import JournalRows
from loomgraph.agent.resume_errors import (
    ApprovalExpired,
    ApprovalNotPending,
    ApprovalRefused,
    ApprovalUsed,
    GraphChanged,
    NotACheckpoint,
    ResumeError,
    RunOfAnotherAgent,
    ValueNotPending,
    ValueUsed,
)
from loomgraph.graph.compiled import CompiledGraph
from loomgraph.graph.state import snapshot_of
from loomgraph.protocols import (
    RunRecord,
    Transition,
)
from loomgraph.protocols.paths import NodePath

# The resume errors live in `resume_errors`; they are importable from here as before.
__all__ = [
    "ApprovalExpired",
    "ApprovalNotPending",
    "ApprovalRefused",
    "ApprovalUsed",
    "Checkpoint",
    "GraphChanged",
    "NotACheckpoint",
    "Position",
    "ResumeError",
    "RunOfAnotherAgent",
    "ValueNotPending",
    "ValueUsed",
    "diff",
    "history",
    "is_top_level",
    "position",
]


@dataclass(slots=True)
class Checkpoint:
    """The state of a run after one transition; seq 0 is the first state, before any node
    ran (its `node` is empty and `next_node` the node the run began with)."""

    seq: int
    node: str
    visit: int
    next_node: str
    patch: dict[str, Any]
    state: dict[str, Any]


@dataclass(slots=True)
class Position:
    """Where a run stands after some transitions: its state, visits and the next node."""

    state: dict[str, Any]
    visits: dict[str, int]
    next_node: str
    seq: int
    # The child visits (node, visit) journaled after the last transition of the run's own
    # graph: those of the visit it stopped in, which a resume does again (`RunScope.
    # redone_visits`).
    redone: set[tuple[str, int]] = field(default_factory=set)


def is_top_level(transition: Transition) -> bool:
    """True for transitions of the run's own graph (a subgraph's have `/` in their node)."""
    return NodePath.parse(transition.node).is_top_level


def position(
    graph: CompiledGraph,
    run: RunRecord,
    transitions: Sequence[Transition],
    upto: int | None = None,
    *,
    fork: bool = False,
) -> Position:
    """The state after transition `upto` (default: the last), from the newest snapshot on.
    `fork`: `upto` must be a checkpoint a run can go on from (else `NotACheckpoint`). A row
    the run's graph cannot have written raises `JournalCorrupted` (`JournalRows`)."""
    if fork and upto:
        _fork_point(run.run_id, transitions, upto)
    rows = JournalRows(graph, run)
    used = [t for t in transitions if upto is None or t.seq <= upto]
    chosen = [t for t in used if is_top_level(t)]
    state, start = _first_state(graph, run), 0
    for i in range(len(chosen) - 1, -1, -1):
        snapshot = chosen[i].snapshot
        if snapshot is not None:
            rows.state(chosen[i].seq, snapshot, whole=True)
            state, start = snapshot_of(snapshot), i + 1
            break
    for t in used:
        rows.names(t)
    for t in chosen[start:]:
        rows.apply(state, t)
    visits = dict(run.initial.visits or {}) if run.initial else {}
    for t in chosen:
        visits[t.node] = max(visits.get(t.node, 0), t.visit)
    next_node = chosen[-1].next_node if chosen else _start_node(graph, run)
    if not chosen:
        rows.start(next_node, visits)
    seq = max((t.seq for t in used), default=0)
    last = chosen[-1].seq if chosen else 0
    redone = {(t.node, t.visit) for t in used if t.seq > last}
    return Position(state, visits, next_node, seq, redone)


def history(
    graph: CompiledGraph, run: RunRecord, transitions: Sequence[Transition]
) -> list[Checkpoint]:
    """The run's first state (seq 0), then every transition with the run's state after it."""
    rows = JournalRows(graph, run)
    state = _first_state(graph, run)
    first = next((t.node for t in transitions if is_top_level(t)), _start_node(graph, run))
    out = [Checkpoint(0, "", 0, first, {}, snapshot_of(state))]
    for t in transitions:
        rows.names(t)
        if is_top_level(t):
            rows.apply(state, t)
        out.append(Checkpoint(t.seq, t.node, t.visit, t.next_node, t.patch, snapshot_of(state)))
    return out


def _fork_point(run_id: str, transitions: Sequence[Transition], at: int) -> None:
    """`NotACheckpoint` unless `at` is a transition of the run's own graph."""
    found = next((t for t in transitions if t.seq == at), None)
    if found is not None and is_top_level(found):
        return
    points = [0, *(t.seq for t in transitions if is_top_level(t))]
    if found is None:
        raise NotACheckpoint(run_id, at, f"run {run_id} has no checkpoint {at}", points)
    inside = NodePath.parse(found.node).parts[0]
    raise NotACheckpoint(
        run_id,
        at,
        f"seq {at} of run {run_id} is a step of node {found.node!r}, inside node "
        f"{inside!r}, which a run goes on from only as a whole",
        points,
    )


def _start_node(graph: CompiledGraph, run: RunRecord) -> str:
    """Where the run started: the graph's entry, or the node a fork started at."""
    start = run.initial.node if run.initial else None
    return start if start is not None else graph.graph.entry


def _first_state(graph: CompiledGraph, run: RunRecord) -> dict[str, Any]:
    return graph.schema.initial(run.initial.state if run.initial else {})


def diff(
    before: dict[str, Any] | Checkpoint, after: dict[str, Any] | Checkpoint
) -> dict[str, tuple[Any, Any]]:
    """The fields that differ between two states (or checkpoints), as (before, after) pairs."""
    if isinstance(before, Checkpoint):
        before = before.state
    if isinstance(after, Checkpoint):
        after = after.state
    return {
        k: (before.get(k), after.get(k))
        for k in sorted(set(before) | set(after))
        if before.get(k) != after.get(k)
    }
