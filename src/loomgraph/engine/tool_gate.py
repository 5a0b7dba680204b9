"""Tool calls inside a node: permissions and approvals, hooks, budget, journal, events.

Every tool call of every node kind goes through here (via `NodeContext.call_tool`), so each is
gated, journaled and reported the same way.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from loomgraph.errors import RunStopped
from loomgraph.protocols import Decision, EffectStatus, ToolCall, ToolResult, ToolSpec, Usage
from loomgraph.protocols.events import TOOL_CALL, TOOL_RESULT

if TYPE_CHECKING:
    from loomgraph.engine.context import NodeContext


async def call_tool(ctx: NodeContext, call: ToolCall) -> ToolResult:
    """One journaled, permission-checked, budgeted tool call; failures become error results."""
    deps, scope = ctx.deps, ctx.scope
    key = ctx.next_key()
    await ctx.emit(TOOL_CALL, {"call": call})
    spec = deps.tools.spec(call["tool"])
    if spec is None:  # never run, whatever the policy says
        await _report(ctx, call, Decision("deny", "unknown_tool", "no such tool"))
        names = ", ".join(s["name"] for s in deps.tools.specs()) or "none"
        result = ToolResult(
            content=f"unknown tool {call['tool']!r}; available tools: {names}",
            is_error=True,
            error_type="unknown_tool",
        )
        return await _tool_done(ctx, call, result)
    decision, call = await _decide(ctx, call, spec)
    if decision.verdict != "allow":
        result = ToolResult(
            content=f"permission denied for {call['tool']!r}: "
            f"{decision.reason or decision.rule or 'denied'}",
            is_error=True,
            error_type="permission_denied",
        )
        return await _tool_done(ctx, call, result)
    prior = await ctx._begin(key, "tool", {"call": call})
    if prior is not None and prior.status == "done" and prior.outcome is not None:
        return await _tool_done(ctx, call, ToolResult(**prior.outcome))  # type: ignore[typeddict-item]
    reservation = await scope.reserve("tool", Usage(tool_calls=1))
    await ctx._audit("tool_request", {"call": call, "rule": decision.rule})
    try:
        with deps.telemetry.span(
            f"execute_tool {call['tool']}",
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": call["tool"],
                "gen_ai.tool.call.id": call["id"],
            },
        ):
            result = await deps.tools.call(call, idempotency_key=key)
    except BaseException:
        await scope.release(reservation)
        raise
    await scope.settle(reservation, Usage(tool_calls=1))
    await deps.runtime.end_effect(scope.run_id, key, dict(result), EffectStatus.DONE)
    return await _tool_done(ctx, call, result)


async def _decide(ctx: NodeContext, call: ToolCall, spec: ToolSpec) -> tuple[Decision, ToolCall]:
    """The permission verdict for a call (asking for approval when a rule says so), after
    the hooks had their say; reported as an event and in the audit log."""
    deps, scope = ctx.deps, ctx.scope
    decision = await deps.permissions.check(call, spec, user_id=scope.user_id)
    if decision.verdict == "ask":
        decision, call = await _approval(ctx, call, spec, decision)
    if decision.verdict == "allow":
        hook = await deps.hooks.before_tool(call)
        if hook is not None and hook.verdict == "deny":  # hooks may deny, never approve
            decision = hook
    await _report(ctx, call, decision)
    return decision, call


async def _report(ctx: NodeContext, call: ToolCall, decision: Decision) -> None:
    """A decision as a `permission_decision` event and audit entry, naming its rule."""
    report = {
        "call_id": call["id"],
        "tool": call["tool"],
        "verdict": decision.verdict,
        "rule": decision.rule,
        "reason": decision.reason,
    }
    await ctx.emit("permission_decision", report)
    await ctx._audit("permission_decision", report)


async def _approval(
    ctx: NodeContext, call: ToolCall, spec: ToolSpec, asked: Decision
) -> tuple[Decision, ToolCall]:
    """Settle an `ask`: with the approval the run was resumed with (bound to this call),
    one journaled before a crash, or the approval handler; else stop the run to wait."""
    key = f"approval:{call['id']}"
    answer: Any = None
    supplied = ctx.scope.options.get("approval")
    if supplied is not None and supplied[0] == call["id"]:
        del ctx.scope.options["approval"]
        answer = supplied[1]
    elif (earlier := await _journaled(ctx, key)) is not None:
        answer = earlier["answer"]
    elif ctx.deps.approval_handler is not None:
        answer = ctx.deps.approval_handler(call, asked)
        if inspect.isawaitable(answer):
            answer = await answer
    if answer is None:
        raise RunStopped(
            "awaiting_approval",
            f"tool {call['tool']!r} needs approval ({asked.rule})",
            {"call": call, "rule": asked.rule, "node": ctx.qualified_node},
        )
    answer = (await ctx.effect(key, {"call": call}, lambda: _answered(answer)))["answer"]
    await ctx._audit("approval", {"call_id": call["id"], "answer": answer})
    if answer is False:
        return Decision("deny", "approval:denied", "the user denied this call"), call
    if isinstance(answer, dict):
        call = ToolCall(id=call["id"], tool=call["tool"], args=dict(answer["args"]))
        again = await ctx.deps.permissions.check(call, spec, user_id=ctx.scope.user_id)
        if again.verdict == "deny":  # edited arguments meet the rules again
            return again, call
    return Decision("allow", "approval:granted", asked.rule), call


async def _journaled(ctx: NodeContext, name: str) -> dict[str, Any] | None:
    key = f"{ctx.scope.run_id}:{ctx.key_path}{ctx.node}:{ctx.visit}:{name}"
    for effect in await ctx.deps.runtime.effects(ctx.scope.run_id):
        if effect.key == key and effect.status == "done":
            return effect.outcome
    return None


async def _tool_done(ctx: NodeContext, call: ToolCall, result: ToolResult) -> ToolResult:
    await ctx._audit(
        "tool_result",
        {"call_id": call["id"], "tool": call["tool"], "is_error": result.get("is_error", False)},
    )
    await ctx.deps.hooks.after_tool(call, result)
    await ctx.emit(TOOL_RESULT, {"call": call, "result": result})
    return result


async def _answered(answer: Any) -> dict[str, Any]:
    return {"answer": answer}
