"""The tool gate: permissions, approvals and hooks for one tool call, then the journaled,
budgeted call itself.

Every tool call of every node kind goes through a `ToolGate` (via `NodeContext.call_tool`), so
each is gated, journaled and reported the same way.
"""

from __future__ import annotations

import inspect
from typing import Any

from loomgraph.engine.effects import Approval, EffectKey
from loomgraph.engine.scope import RunScope
from loomgraph.protocols import (
    Decision,
    EffectStatus,
    Pending,
    RunStatus,
    RunStopped,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
)
from loomgraph.protocols.events import PERMISSION_DECISION, TOOL_CALL, TOOL_RESULT


class ToolGate:
    """Decides, journals and runs the tool calls of one node visit."""

    __slots__ = ("node", "scope")

    def __init__(self, scope: RunScope, node: str) -> None:
        self.scope = scope
        # The node's qualified name, for events and the audit log.
        self.node = node

    async def call(self, call: ToolCall, key: EffectKey) -> ToolResult:
        """One journaled, permission-checked, budgeted call; failures become error results."""
        scope, deps = self.scope, self.scope.deps
        await scope.emit(TOOL_CALL, {"call": call}, self.node)
        spec = deps.tools.spec(call["tool"])
        if spec is None:  # never run, whatever the policy says
            await self.report(call, Decision("deny", "unknown_tool", "no such tool"))
            names = ", ".join(s["name"] for s in deps.tools.specs()) or "none"
            result = ToolResult(
                content=f"unknown tool {call['tool']!r}; available tools: {names}",
                is_error=True,
                error_type="unknown_tool",
            )
            return await self._done(call, result)
        decision, call = await self.decide(call, spec, key)
        if decision.verdict != "allow":
            reason = decision.reason or decision.rule or "denied"
            result = ToolResult(
                content=f"permission denied for {call['tool']!r}: {reason}",
                is_error=True,
                error_type="permission_denied",
            )
            return await self._done(call, result)
        prior = await scope.begin_effect(key, "tool", {"call": call}, self.node)
        if prior is not None and prior.status == EffectStatus.DONE and prior.outcome is not None:
            return await self._done(call, ToolResult(**prior.outcome))  # type: ignore[typeddict-item]
        reservation = await scope.reserve("tool", Usage(tool_calls=1))
        await scope.audit("tool_request", self.node, {"call": call, "rule": decision.rule})
        try:
            attributes = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": call["tool"],
                "gen_ai.tool.call.id": call["id"],
            }
            with deps.telemetry.span(f"execute_tool {call['tool']}", attributes):
                result = await deps.tools.call(call, idempotency_key=str(key))
        except BaseException:
            await scope.release(reservation)
            raise
        await scope.settle(reservation, Usage(tool_calls=1))
        await scope.end_effect(key, dict(result))
        return await self._done(call, result)

    async def decide(
        self, call: ToolCall, spec: ToolSpec, key: EffectKey
    ) -> tuple[Decision, ToolCall]:
        """The permission verdict for a call (asking for approval when a rule says so), after
        the hooks had their say; reported as an event and in the audit log."""
        deps = self.scope.deps
        decision = await deps.permissions.check(call, spec, user_id=self.scope.user_id)
        if decision.verdict == "ask":
            decision, call = await self._approval(call, spec, decision, key)
        if decision.verdict == "allow":
            hook = await deps.hooks.before_tool(call)
            if hook is not None and hook.verdict == "deny":  # hooks may deny, never approve
                decision = hook
        await self.report(call, decision)
        return decision, call

    async def report(self, call: ToolCall, decision: Decision) -> None:
        """A decision as a `permission_decision` event and audit entry, naming its rule."""
        report = {
            "call_id": call["id"],
            "tool": call["tool"],
            "verdict": decision.verdict,
            "rule": decision.rule,
            "reason": decision.reason,
        }
        await self.scope.emit(PERMISSION_DECISION, report, self.node)
        await self.scope.audit(PERMISSION_DECISION, self.node, report)

    async def _approval(
        self, call: ToolCall, spec: ToolSpec, asked: Decision, key: EffectKey
    ) -> tuple[Decision, ToolCall]:
        """Settle an `ask`: with the approval the run was resumed with (bound to this call),
        one journaled before a crash, or the approval handler; else stop the run to wait."""
        scope = self.scope
        approval_key = EffectKey.approval(key.run_id, key.path, key.visit, call["id"])
        earlier = await scope.finished_effect(approval_key)
        if earlier is not None:  # answered before a crash: that answer stands
            answer = Approval.from_journal(call["id"], earlier["answer"])
        else:
            fresh = await self._fresh_answer(call, asked)
            if fresh is None:
                raise RunStopped(
                    RunStatus.AWAITING_APPROVAL,
                    f"tool {call['tool']!r} needs approval ({asked.rule})",
                    Pending(self.node, call=call, rule=asked.rule, key=str(approval_key)),
                )
            answer = fresh
            await scope.begin_effect(approval_key, "approval", {"call": call}, self.node)
            await scope.end_effect(approval_key, {"answer": answer.journaled()})
        await scope.audit(
            "approval", self.node, {"call_id": call["id"], "answer": answer.journaled()}
        )
        if not answer.allow:
            return Decision("deny", "approval:denied", "the user denied this call"), call
        if answer.args is not None:
            call = ToolCall(id=call["id"], tool=call["tool"], args=dict(answer.args))
            again = await scope.deps.permissions.check(call, spec, user_id=scope.user_id)
            if again.verdict == "deny":  # edited arguments meet the rules again
                return again, call
        return Decision("allow", "approval:granted", asked.rule), call

    async def _fresh_answer(self, call: ToolCall, asked: Decision) -> Approval | None:
        """The approval the run was resumed with for this call, or the handler's answer."""
        scope = self.scope
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
        return None if answer is None else Approval.from_journal(call["id"], answer)

    async def _done(self, call: ToolCall, result: ToolResult) -> ToolResult:
        scope = self.scope
        await scope.audit(
            "tool_result",
            self.node,
            {
                "call_id": call["id"],
                "tool": call["tool"],
                "is_error": result.get("is_error", False),
            },
        )
        await scope.deps.hooks.after_tool(call, result)
        await scope.emit(TOOL_RESULT, {"call": call, "result": result}, self.node)
        return result
