"""Journaled effects: the key that names one, and the typed answers a run is resumed with.

An effect (a model call, a tool call, an approval, a memory write) is journaled as intent
before and outcome after, under an `EffectKey` built from the run, the node's path (with the
visit of each enclosing node), the node's visit and a slot — never from the arguments, so two
identical calls of one visit are two effects, and a second visit of a node is a new effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The slot of the approval of one tool call, by call id, and of the request for it.
APPROVAL_SLOT = "approval:"
REQUEST_SLOT = "approval-request:"


@dataclass(frozen=True, slots=True)
class EffectKey:
    """The idempotency key of one effect; `str(key)` is what the journal and tools see."""

    run_id: str
    # The node's path: enclosing nodes with their visits (`plan.1/`), then the node's name.
    path: str
    visit: int
    # A counter within the visit (`1`, `2`, ...) or a name (`branch:0`, `approval:CALL_ID`).
    slot: str

    def __str__(self) -> str:
        return f"{self.run_id}:{self.path}:{self.visit}:{self.slot}"

    @classmethod
    def approval(cls, run_id: str, path: str, visit: int, call_id: str) -> EffectKey:
        """The key under which the answer to one call's approval request is journaled."""
        return cls(run_id, path, visit, APPROVAL_SLOT + call_id)

    @classmethod
    def approval_request(cls, run_id: str, path: str, visit: int, call_id: str) -> EffectKey:
        """The key under which the request for one call's approval is journaled."""
        return cls(run_id, path, visit, REQUEST_SLOT + call_id)

    @staticmethod
    def is_approval_of(key: str, call_id: str) -> bool:
        """True when a journaled key is the approval of `call_id` (at any node and visit)."""
        return key.endswith(f":{APPROVAL_SLOT}{call_id}")


@dataclass(frozen=True, slots=True)
class ResumeValue:
    """The value an `interrupt` node asked for, addressed to that node (by its full path)."""

    node: str
    value: Any


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

    @classmethod
    def from_journal(cls, call_id: str, answer: Any, approver: str = "") -> Approval:
        """The approval a journaled answer (or an approval handler's) stands for."""
        if isinstance(answer, dict):
            return cls(call_id, True, dict(answer["args"]), approver)
        return cls(call_id, bool(answer), approver=approver)


ResumeInput = ResumeValue | Approval
