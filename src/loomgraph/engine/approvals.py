"""Approvals: settling an `ask` for one tool call, durably.

A request for approval is a journaled fact bound to one call id. Once it is journaled, the
call runs only after an explicit approval of that call id — whatever permissions a resuming
Agent has — and the answer is journaled too, so it is used once. A request whose deadline
passed is denied, and the run goes on.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

from loomgraph.engine.audit_trail import args_hash
from loomgraph.engine.effects import Approval, EffectKey
from loomgraph.engine.scope import RunScope
from loomgraph.protocols import (
    AuditAction,
    Decision,
    Pending,
    PinnablePolicy,
    RunStatus,
    RunStopped,
    ToolCall,
    ToolSpec,
)

__all__ = ["ApprovalDesk", "args_hash"]


class ApprovalDesk:
    """Settles the `ask` of one call of one node visit."""

    __slots__ = ("answer_key", "call", "node", "request_key", "scope")

    def __init__(self, scope: RunScope, node: str, call: ToolCall, key: EffectKey) -> None:
        self.scope = scope
        self.node = node
        self.call = call
        self.answer_key = EffectKey.approval(key.run_id, key.path, key.visit, call["id"])
        self.request_key = EffectKey.approval_request(key.run_id, key.path, key.visit, call["id"])

    @property
    def was_requested(self) -> bool:
        """True when this call's approval was requested before the run stopped."""
        return str(self.request_key) in self.scope.requested

    async def asked_before(self) -> Decision:
        """The `ask` the journaled request was made under (its rule and reason)."""
        request = await self.scope.finished_effect(self.request_key) or {}
        rule = request.get("rule") or "approval:pending"
        return Decision("ask", rule, request.get("reason") or "asked before the run stopped")

    async def settle(
        self, spec: ToolSpec, asked: Decision, *, tainted: bool = False
    ) -> tuple[Decision, ToolCall]:
        """The answer to `asked`: journaled before, supplied with the resume, given by the
        approval handler, or — with none of these — stop the run to wait for one."""
        scope, call = self.scope, self.call
        earlier = await scope.finished_effect(self.answer_key)
        if earlier is not None:  # answered before a crash: that answer stands
            answer = Approval.from_journal(call["id"], earlier["answer"], earlier.get("by", ""))
        else:
            answer = await self._new_answer(asked, tainted)
            await scope.begin_effect(self.answer_key, "approval", {"call": call}, self.node)
            outcome = {"answer": answer.journaled(), "by": answer.approver}
            await scope.end_effect(self.answer_key, outcome)
        if scope.auditing:
            await self._audit(answer)
        if not answer.allow:
            reason = answer.reason or "the user denied this call"
            return Decision("deny", "approval:denied", reason), call
        if answer.args is not None:
            call = ToolCall(id=call["id"], tool=call["tool"], args=dict(answer.args))
            again = await scope.deps.permissions.check(call, spec, user_id=scope.user_id)
            if again.verdict == "deny":  # edited arguments meet the rules again
                return again, call
        return Decision("allow", "approval:granted", asked.rule), call

    async def _new_answer(self, asked: Decision, tainted: bool) -> Approval:
        scope, call = self.scope, self.call
        request = await scope.finished_effect(self.request_key)
        if request is not None and request.get("deadline") and time.time() > request["deadline"]:
            return Approval(call["id"], False, approver="timeout", reason="approval timed out")
        fresh = await self._supplied(asked)
        if fresh is not None:
            return fresh
        if request is None:
            request = self._request(asked, tainted)
            await scope.begin_effect(self.request_key, "approval_request", request, self.node)
            await scope.end_effect(self.request_key, request)
            if scope.auditing:
                asking = {
                    "call_id": call["id"],
                    "tool": call["tool"],
                    "rule": request["rule"],
                    "args_hash": args_hash(call["args"]),
                    "tainted": tainted,
                    "deadline": request["deadline"],
                }
                await scope.audit(AuditAction.APPROVAL_REQUESTED, self.node, asking)
        raise RunStopped(
            RunStatus.AWAITING_APPROVAL,
            f"tool {call['tool']!r} needs approval ({request['rule']})",
            Pending(
                self.node,
                call=call,
                rule=request["rule"],
                key=str(self.answer_key),
                tainted=bool(request.get("tainted")),
                asked_at=request.get("asked_at"),
                deadline=request.get("deadline"),
            ),
        )

    def _request(self, asked: Decision, tainted: bool) -> dict[str, Any]:
        permissions = self.scope.deps.permissions
        timeout = None
        if isinstance(permissions, PinnablePolicy):
            timeout = permissions.approval_timeout(asked.rule)
        now = time.time()
        return {
            "call": self.call,
            "rule": asked.rule,
            "reason": asked.reason,
            "tainted": tainted,
            "asked_at": now,
            "deadline": None if timeout is None else now + timeout,
        }

    async def _supplied(self, asked: Decision) -> Approval | None:
        """The approval the run was resumed with for this call, or the handler's answer."""
        scope, call = self.scope, self.call
        supplied = scope.resume
        if isinstance(supplied, Approval) and supplied.call_id == call["id"]:
            scope.resume = None
            return supplied
        handler = scope.deps.approval_handler
        if handler is None:
            return None
        answer: Any = handler(call, asked)
        if inspect.isawaitable(answer):
            answer = await answer
        if answer is None:
            return None
        if isinstance(answer, Approval):
            return answer
        return Approval.from_journal(call["id"], answer, approver="handler")

    async def _audit(self, answer: Approval) -> None:
        call = self.call
        entry: dict[str, Any] = {
            "call_id": call["id"],
            "tool": call["tool"],
            "allow": answer.allow,
            "approver": answer.approver,
            "args_hash": args_hash(call["args"]),
        }
        if answer.args is not None:
            entry["edited_args_hash"] = args_hash(answer.args)
        if answer.reason:
            entry["reason"] = answer.reason
        await self.scope.audit(AuditAction.APPROVAL, self.node, entry)
