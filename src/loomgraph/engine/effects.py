"""Journaled effects: the key that names one, the typed answers a run is resumed with, and
the effects those answers are journaled as.

An effect (a model call, a tool call, an approval, a memory write) is journaled as intent
before and outcome after, under an `EffectKey` built from the run, the node's path (with the
visit of each enclosing node), the node's visit and a slot — never from the arguments, so two
identical calls of one visit are two effects, and a second visit of a node is a new effect.
"""

from __future__ import annotations

import json
import reprlib
from dataclasses import dataclass, field
from typing import Any

from loomgraph.protocols import EffectRecord, EffectStatus, Pending, ToolCall
from loomgraph.protocols.paths import NodePath
from loomgraph.protocols.tool_args import ToolArgsRejected, check_tool_args

# The slot of the approval of one tool call, and of the request for it. They follow the
# slot of the call's own effect (`3:approval:CALL_ID`): call ids come from the model and
# are not unique, the call's effect slot is. Journals written before approvals were bound
# to the call's slot have them without it (`approval:CALL_ID`), which a resume still reads.
APPROVAL_SLOT = "approval:"
REQUEST_SLOT = "approval-request:"
# The slot of an `interrupt` visit's question: its key is the request's `Pending.key`, and
# the journal key of the answer (`run:path:visit:answer`).
ANSWER_SLOT = "answer"
# The kinds of the effects a person's answers are journaled as, under the request's
# `Pending.key`: by the tool gate or the `interrupt` node, or ahead of them by the resume that
# takes the answer up (`answer_effect`), so a crash before they run does not lose it.
APPROVAL_KIND = "approval"
ANSWER_KIND = ANSWER_SLOT
# The kinds of a tool call's effect and of an approval request's (what the person was asked).
TOOL_EFFECT = "tool"
APPROVAL_REQUEST_KIND = "approval_request"

# What the journal stores and gives back unchanged: no NaN or infinity (allow_nan=False).
_STRICT_JSON = json.JSONEncoder(allow_nan=False)
_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 60


@dataclass(frozen=True, slots=True)
class EffectKey:
    """The idempotency key of one effect; `str(key)` is what the journal and tools see."""

    run_id: str
    # The node's path: enclosing nodes with their visits (`plan.1/`), then the node's name.
    path: str
    visit: int
    # A counter within the visit (`1`, `2`, ...) or a name (`branch:0`, `3:approval:ID`).
    slot: str
    # `run:path:visit:slot`, what the journal and tools see (`str(key)`), made once.
    text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", f"{self.run_id}:{self.path}:{self.visit}:{self.slot}")

    def __str__(self) -> str:
        return self.text

    def approval_of(self, call_id: str) -> EffectKey:
        """The key of the answer to the approval of the tool call journaled under this key."""
        return EffectKey(
            self.run_id, self.path, self.visit, f"{self.slot}:{APPROVAL_SLOT}{call_id}"
        )

    def approval_request_of(self, call_id: str) -> EffectKey:
        """The key of the request for approval of the tool call journaled under this key."""
        slot = f"{self.slot}:{REQUEST_SLOT}{call_id}"
        return EffectKey(self.run_id, self.path, self.visit, slot)

    def legacy_approval_of(self, call_id: str) -> EffectKey:
        """The answer's key as journals written before approvals named the call's slot have it
        (`approval:CALL_ID`, shared by every call of the visit with that id)."""
        return EffectKey(self.run_id, self.path, self.visit, APPROVAL_SLOT + call_id)

    def legacy_approval_request_of(self, call_id: str) -> EffectKey:
        """The request's key as journals written before approvals named the call's slot have it."""
        return EffectKey(self.run_id, self.path, self.visit, REQUEST_SLOT + call_id)

    @staticmethod
    def is_approval_of(key: str, call_id: str) -> bool:
        """True when a journaled key is the approval of `call_id` (at any node, visit and
        call slot, in either key scheme)."""
        return key.endswith(f":{APPROVAL_SLOT}{call_id}")

    @staticmethod
    def node_of(key: str, run_id: str) -> str:
        """The node path (`plan/0/tools`) of a journaled key of run `run_id`, whose path holds
        each enclosing node with its visit (`run:plan.1/0/tools:1:2`)."""
        *outer, node = key.removeprefix(f"{run_id}:").split(":")[0].split(NodePath.SEPARATOR)
        return NodePath.SEPARATOR.join([*(part.rsplit(".", 1)[0] for part in outer), node])


@dataclass(frozen=True, slots=True)
class ResumeValue:
    """The value an `interrupt` node asked for, addressed to that node (by its full path) and
    to the visit that asked (`key`, the request's `Pending.key`): a later question of the same
    node is another request, which this value does not answer."""

    node: str
    value: Any
    # "" for a request journaled before interrupt requests had keys: matched by node alone.
    key: str = ""

    def answers(self, node: str, request: str) -> bool:
        """True when this value answers the question `node`'s visit asks under key `request`
        (its `ANSWER_SLOT` effect's key)."""
        return node == self.node and (not self.key or self.key == request)


@dataclass(frozen=True, slots=True)
class BoundValue:
    """An answer to an `interrupt` pinned to the question it answers: `key` is the request's
    `Pending.key` as it was shown. Given to `agent.resume(value=...)` (or `submit_resume`),
    it answers that request or nothing: once the run asks another question (a later visit of
    the same node, or another node), it is refused (`ValueNotPending`), never used there."""

    value: Any
    key: str


def shown(value: Any) -> str:
    """A short description of a value for an error message: its repr (cut) and its type."""
    return f"{_SHOWN.repr(value)} ({type(value).__name__})"


def json_problem(value: Any) -> str | None:
    """Why `value` is not plain JSON that the journal keeps and gives back unchanged, or None."""
    try:
        text = _STRICT_JSON.encode(value)
    except (TypeError, ValueError, RecursionError) as err:
        return str(err)
    # Tuples and non-string keys encode, but come back as lists and strings: the journal
    # would replay other arguments than the ones given.
    if json.loads(text) != value:
        return "it does not read back the same from JSON (a tuple, or a key that is not a str)"
    return None


@dataclass(frozen=True, slots=True)
class Approval:
    """A person's answer to one pending tool call: allow it (with edited arguments, which meet
    the rules again) or deny it."""

    call_id: str
    allow: bool
    args: dict[str, Any] | None = None
    # Who answered, as the caller names them (recorded in the journal and the audit log).
    approver: str = ""
    reason: str = ""

    def journaled(self) -> Any:
        """The answer as the journal keeps it: True, False or {"args": edited}."""
        if not self.allow:
            return False
        return {"args": dict(self.args)} if self.args is not None else True

    def outcome(self) -> dict[str, Any]:
        """The outcome of the answer's effect: the answer, who gave it and why."""
        journaled: dict[str, Any] = {"answer": self.journaled(), "by": self.approver}
        if self.reason:  # so a replayed refusal tells the model the same reason
            journaled["reason"] = self.reason
        return journaled

    def problem(self) -> str | None:
        """What makes this answer unusable — a field of the wrong type, edited arguments that
        are not plain JSON — named by its field and the type found, never its value (an
        approval handler's refused answer is audited, and may hold the call's arguments);
        None when it can be used."""

        def kind(value: Any) -> str:
            empty = isinstance(value, str) and not value
            return "an empty str" if empty else f"a value of type {type(value).__name__}"

        if not isinstance(self.call_id, str) or not self.call_id:
            return f"Approval.call_id must be the pending call's id, not {kind(self.call_id)}"
        if not isinstance(self.allow, bool):
            return f"Approval.allow must be True or False, not {kind(self.allow)}"
        if self.args is not None:
            if not isinstance(self.args, dict):
                return f"Approval.args must be a dict of edited arguments, not {kind(self.args)}"
            try:  # first, without recursion: a deep value exhausts the stack of what recurses
                check_tool_args(self.args, refuse_cut=True)  # the limits a model's meet
            except ToolArgsRejected as err:
                return f"Approval.args are not usable as {err}"
            problem = json_problem(self.args)
            if problem is not None:
                return f"Approval.args must be plain JSON (the journal keeps them): {problem}"
        if not isinstance(self.approver, str):
            return f"Approval.approver must be a str, not {kind(self.approver)}"
        if not isinstance(self.reason, str):
            return f"Approval.reason must be a str, not {kind(self.reason)}"
        return None

    @classmethod
    def from_journal(
        cls, call_id: str, answer: Any, approver: str = "", reason: str = ""
    ) -> Approval:
        """The approval a journaled answer (True, False or {"args": edited}) stands for."""
        if isinstance(answer, dict):
            return cls(call_id, True, dict(answer["args"]), approver, reason)
        return cls(call_id, answer is True, approver=approver, reason=reason)


@dataclass(frozen=True, slots=True)
class BoundApproval(Approval):
    """An approval checked against what its run waits for (by `agent.resume`): `key` is the
    journal key of the pending request's answer (`Pending.key`), the one call it may settle —
    the same call id elsewhere (another call of the turn, a later turn) is another call."""

    key: str = ""


ResumeInput = ResumeValue | Approval


def approval_intent(call: ToolCall) -> dict[str, Any]:
    """The intent of the answer to the approval of `call`: the call it settles."""
    return {"call": call}


def value_intent(node: str, asked: str) -> dict[str, Any]:
    """The intent of the answer to the question `node` asks: the node and the type asked."""
    return {"node": node, "type": asked}


def value_outcome(value: Any) -> dict[str, Any]:
    """The outcome of the answer to a question: the value."""
    return {"value": value}


def answer_effect(run_id: str, pending: Pending, answer: ResumeInput) -> EffectRecord | None:
    """The effect the tool gate or the `interrupt` node journals for `answer` to `pending`,
    done, under the request's key (the same key, kind, intent and outcome); None for a request
    journaled before requests named their key, whose answer only they can place."""
    if not pending.key:
        return None
    if isinstance(answer, Approval):
        if pending.call is None:
            return None
        intent, outcome = approval_intent(pending.call), answer.outcome()
        return EffectRecord(run_id, pending.key, APPROVAL_KIND, intent, outcome, EffectStatus.DONE)
    if answer.key != pending.key:  # a value matched by node alone (an older request)
        return None
    intent, outcome = value_intent(pending.node, pending.type), value_outcome(answer.value)
    return EffectRecord(run_id, pending.key, ANSWER_KIND, intent, outcome, EffectStatus.DONE)


def ran_call(effect: EffectRecord, call: ToolCall) -> ToolCall:
    """The call as it ran (its intent: the arguments an approver may have edited), or `call`
    when the intent names none (an effect journaled by other code)."""
    ran = effect.intent.get("call")
    if isinstance(ran, dict) and {"id", "tool", "args"} <= ran.keys():
        return ToolCall(id=ran["id"], tool=ran["tool"], args=ran["args"])
    return call
