"""Checkpoints: rebuild a run's state at any seq from its journal, and compare two of them."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

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
from loomgraph.engine.approval_checks import edit_too_large
from loomgraph.engine.effects import (
    Approval,
    BoundApproval,
    BoundValue,
    EffectKey,
    ResumeInput,
    ResumeValue,
    answer_effect,
)
from loomgraph.graph.compiled import CompiledGraph
from loomgraph.graph.field_types import parse_type
from loomgraph.graph.state import snapshot_of
from loomgraph.protocols import (
    EffectRecord,
    EffectStatus,
    Pending,
    RunReader,
    RunRecord,
    RunStatus,
    RunWriter,
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
    "answered",
    "approval",
    "check_agent",
    "check_owner",
    "diff",
    "expired",
    "history",
    "is_top_level",
    "journal_answer",
    "may_go_on",
    "not_answered",
    "pending_of",
    "position",
    "resume_value",
    "stopped_at",
]


def may_go_on(owner: str, agent_name: str) -> bool:
    """The one rule of which agent goes on with a run: an Agent called `agent_name` may go on
    with a run the agent `owner` started or submitted when the owner is unknown (unnamed, or a
    journal from before names were kept) or the same."""
    return not owner or owner == agent_name


def check_agent(record: RunRecord, agent_name: str) -> None:
    """`RunOfAnotherAgent` unless an Agent called `agent_name` may go on with the run."""
    check_owner(record.run_id, record.agent_name, agent_name)


def check_owner(run_id: str, owner: str, agent_name: str) -> None:
    """`RunOfAnotherAgent` unless an Agent called `agent_name` may go on with a run the
    agent `owner` started or submitted ("": not known)."""
    if not may_go_on(owner, agent_name):
        raise RunOfAnotherAgent(run_id, owner, agent_name)


def expired(pending: Pending) -> bool:
    """Whether the deadline of a request (an approval's, with a timeout) has passed."""
    return pending.deadline is not None and time.time() > pending.deadline


def _in_time(record: RunRecord, pending: Pending) -> None:
    if expired(pending):
        raise ApprovalExpired(record.run_id, pending.call["id"] if pending.call else "")


def pending_of(record: RunRecord) -> Pending | None:
    """What a run waits for now: its journaled request while it waits for an approval or a
    value, else None. A run cancelled while it waited keeps the request it stopped at in its
    result (`stopped_at`), but waits for nothing: no answer is taken, none is asked for."""
    return stopped_at(record) if record.status in _WAITING else None


def stopped_at(record: RunRecord) -> Pending | None:
    """The request a run last stopped at, as its journaled result says, whatever its status
    since (a resume of a cancelled run goes on from there)."""
    data = (record.result or {}).get("pending")
    return None if data is None else Pending.from_dict(data)


_WAITING = frozenset({RunStatus.AWAITING_APPROVAL, RunStatus.INTERRUPTED})


def resume_value(record: RunRecord, value: Any) -> ResumeValue:
    """The interrupted node and the value validated against the type it asked for, bound to
    the request it answers (`Pending.key`). A `BoundValue` naming another request is refused
    (`ValueNotPending`); a plain value answers the request pending now."""
    named = ""
    if isinstance(value, BoundValue):
        named, value = value.key, value.value
        if not isinstance(named, str) or not named:
            raise ResumeError(
                f"BoundValue.key must be the pending request's key (`Pending.key`), not "
                f"{named!r}; nothing was journaled, the run still waits"
            )
    pending = pending_of(record)
    if record.status != RunStatus.INTERRUPTED or pending is None or not pending.type:
        waits = f"run {record.run_id} is not waiting for a value (status {str(record.status)!r})"
        if named:  # the question answered was answered already, or was never asked
            raise ValueNotPending(f"{waits}, so not for the answer to request {named}")
        raise ValueNotPending(waits)  # as an approval for a run that asks none
    if named and pending.key and named != pending.key:
        # Named, an answer never lands on another question, even one of the same node.
        raise ValueNotPending(
            f"run {record.run_id} waits at {pending.node!r} for the answer to request "
            f"{pending.key}, not to request {named}: that question was answered already or "
            "never asked; read what the run asks now and answer that"
        )
    adapter: TypeAdapter[Any] = TypeAdapter(parse_type(pending.type))
    try:
        checked = adapter.validate_python(value)
    except ValidationError as err:
        raise ResumeError(
            f"run {record.run_id} waits at {pending.node!r} for a "
            f"{pending.type}; the value does not fit: {err}"
        ) from None
    return ResumeValue(pending.node, adapter.dump_python(checked, mode="json"), pending.key)


def approval(record: RunRecord, approve: Any) -> BoundApproval:
    """The approval of the pending call, bound to its request (`Pending.key`): an `Approval`
    naming that call, or the shorthands True, False or {"args": edited}, bound to the one
    pending call. An answer that cannot be used raises a `ResumeError` naming the field,
    before anything is journaled."""
    pending = pending_of(record)
    call = pending.call if pending is not None else None
    if record.status != RunStatus.AWAITING_APPROVAL or pending is None or not call:
        if record.status == RunStatus.INTERRUPTED:  # not a used approval: a question
            raise ApprovalNotPending(
                f"run {record.run_id} asks a question, not for an approval: answer it with "
                "a value (resume with value=...; `runs resume --value JSON`)"
            )
        raise ApprovalNotPending(
            f"run {record.run_id} is not waiting for an approval "
            f"(status {str(record.status)!r}); an approval is used once"
        )
    if isinstance(approve, Approval):
        answer = approve
    elif approve is True or approve is False:
        answer = Approval(call["id"], approve)
    elif isinstance(approve, dict) and set(approve) == {"args"} and approve["args"] is not None:
        answer = Approval(call["id"], True, approve["args"])  # a non-dict is named below
    else:
        raise ResumeError(
            "approve must be True, False, {'args': {...}} (edited arguments) or an Approval, "
            f"got {approve!r}"
        )
    problem = answer.problem()
    if problem is not None:  # checked here: the journal would refuse it mid-run
        raise ResumeError(
            f"run {record.run_id}: {problem}; nothing was journaled, the run still waits"
        )
    named = answer.key if isinstance(answer, BoundApproval) else ""
    if answer.call_id != call["id"] or (named and pending.key and named != pending.key):
        # An answer naming its request (`Pending.key`) never lands on another request
        # for a call with the same id.
        if answer.call_id == call["id"]:  # the same call id: another request of it
            raise ApprovalNotPending(
                f"run {record.run_id} waits for an approval of call {call['id']} at request "
                f"{pending.key}, not at request {named}: that request was answered already "
                "or never asked; read what the run asks now and answer that"
            )
        raise ApprovalNotPending(
            f"run {record.run_id} waits for an approval of call {call['id']}"
            f"{f' (request {pending.key})' if named else ''}, not of call {answer.call_id}"
            f"{f' (request {named})' if named else ''}"
        )
    _in_time(record, pending)
    return BoundApproval(
        answer.call_id,
        answer.allow,
        None if answer.args is None else copy.deepcopy(answer.args),
        answer.approver,
        answer.reason,
        # Only the pending request's own call may use it (a call sharing its id may not).
        key=pending.key,
    )


async def not_answered(runtime: RunReader, record: RunRecord, call_id: str = "") -> None:
    """Refuse a second answer to the request the run waits for (say, after a crash right
    after the first was journaled): the first answer stands, and a plain resume goes on with
    it. `ApprovalUsed` for an approval (of call `call_id`), `ValueUsed` for a value."""
    pending = pending_of(record)
    if pending is not None and pending.key:
        used = await answered(runtime, record.run_id, pending.key)
    elif call_id:  # a run journaled before pending requests named their key
        used = any(
            EffectKey.is_approval_of(e.key, call_id) and e.status == EffectStatus.DONE
            for e in await runtime.effects(record.run_id)
        )
    else:
        used = False
    if not used:
        return
    if record.status == RunStatus.INTERRUPTED:
        raise ValueUsed(
            f"the question {pending and pending.key} of run {record.run_id} was already "
            "answered (a value is used once); resume without value= to go on"
        )
    raise ApprovalUsed(
        f"call {call_id} of run {record.run_id} was already answered "
        "(approvals are used once); resume without approve= to go on"
    )


async def answered(runtime: RunReader, run_id: str, key: str) -> bool:
    """True when the answer to the request `key` (`Pending.key`) is journaled."""
    answer = await runtime.effect(run_id, key)
    return answer is not None and answer.status == EffectStatus.DONE


async def journal_answer(
    runtime: RunWriter, record: RunRecord, answer: ResumeInput, args_limit: int
) -> bool:
    """Journal `answer` to the request the run waits for, as the tool gate or the interrupt
    node would (`answer_effect`), before the run goes on: the caller holds the run's lease,
    so the writes are fenced. False, journaling nothing, for an answer only they can place
    (a request of an older journal) or refuse (edited arguments over `args_limit`)."""
    pending = pending_of(record)
    effect = None if pending is None else answer_effect(record.run_id, pending, answer)
    if effect is None or pending is None:
        return False
    call = pending.call
    if isinstance(answer, Approval) and call and edit_too_large(call, answer, args_limit):
        return False
    intent = EffectRecord(effect.run_id, effect.key, effect.kind, effect.intent)
    prior = await runtime.begin_effect(intent)
    if prior is None or prior.status != EffectStatus.DONE:  # else the first answer stands
        await runtime.end_effect(effect.run_id, effect.key, effect.outcome or {}, effect.status)
    return True


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
    return Position(state, visits, next_node, seq)


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
