"""Answers to waiting runs: which agent may go on with a run, what a run waits for, whether
an answer (an approval, a value) may be taken, and journaling it before the run goes on."""

from __future__ import annotations

import copy
import time
from typing import Any

from pydantic import TypeAdapter, ValidationError

from loomgraph.agent.resume_errors import (
    ApprovalExpired,
    ApprovalNotPending,
    ApprovalUsed,
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
from loomgraph.graph.field_types import parse_type
from loomgraph.graph.outside_values import NotJsonData, validate_outside
from loomgraph.protocols import (
    EffectRecord,
    EffectStatus,
    Pending,
    RunReader,
    RunRecord,
    RunStatus,
    RunWriter,
)

__all__ = [
    "answered",
    "approval",
    "check_agent",
    "check_owner",
    "expired",
    "journal_answer",
    "may_go_on",
    "not_answered",
    "pending_of",
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
        checked = validate_outside(adapter, value)  # strictly, as the JSON it is sent as
    except (ValidationError, NotJsonData) as err:
        raise ResumeError(
            f"run {record.run_id} waits at {pending.node!r} for a value of type "
            f"{pending.type}; the value does not fit: {err}"
        ) from None
    return ResumeValue(pending.node, adapter.dump_python(checked, mode="json"), pending.key)


def given_now() -> float:
    """When an answer is given, by the clock requests are stamped and their deadlines are
    checked by: a resume or a submit reads it first, before anything is read."""
    return time.time()


def approval(record: RunRecord, approve: Any, given_at: float | None = None) -> BoundApproval:
    """The approval of the pending call, bound to its request (`Pending.key`): an `Approval`
    naming that call, or the shorthands True, False or {"args": edited}, bound to the one
    pending call. An answer that cannot be used raises a `ResumeError` naming the field,
    before anything is journaled.

    `given_at` (epoch seconds, `given_now`): when the answer was given. An
    answer that does not name its request (no `key`) approves no request asked after it:
    two answers given to one request at once must not have the second land on the
    request the first one's run asked next, for a call of the same id nobody saw."""
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
        if named and named == pending.key:  # its request, named with another call's id
            raise ApprovalNotPending(
                f"run {record.run_id} waits for an approval of call {call['id']}: request "
                f"{named} is of call {call['id']}, not of call {answer.call_id}; answer it "
                "with the call id it shows"
            )
        raise ApprovalNotPending(
            f"run {record.run_id} waits for an approval of call {call['id']}"
            f"{f' (request {pending.key})' if named else ''}, not of call {answer.call_id}"
            f"{f' (request {named})' if named else ''}"
        )
    if not named and given_at is not None and (pending.asked_at or 0.0) > given_at:
        raise ApprovalNotPending(
            f"run {record.run_id} asked for the approval of call {call['id']} (request "
            f"{pending.key}) after this answer was given: an answer approves a request that "
            "was there when it was given; read what the run asks now and answer that (an "
            "answer naming its request, by `Pending.key`, is bound to it)"
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
