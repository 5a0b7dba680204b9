"""The tool gate: permissions, approvals and hooks for one tool call, then the journaled,
budgeted call itself.

Every tool call of every node kind goes through a `ToolGate` (via `NodeContext.call_tool`), so
each is gated, journaled and reported the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

from loomgraph.engine import audit_trail as trail
from loomgraph.engine.approval_checks import args_too_large
from loomgraph.engine.approvals import ApprovalDesk
from loomgraph.engine.effects import TOOL_EFFECT, EffectKey, ran_call
from loomgraph.engine.own_calls import OwnTool, own_call_key
from loomgraph.engine.received import permission_for, received_call, untrusted_in
from loomgraph.engine.scope import NO_ATTRIBUTES, RunScope
from loomgraph.engine.taint import TAINT_REASON, TAINT_RULE, note_result
from loomgraph.engine.watched import watched
from loomgraph.errors import LoomgraphError
from loomgraph.protocols import (
    INVALID_ARGUMENTS,
    AuditAction,
    Decision,
    EffectRecord,
    EffectStatus,
    RunStopped,
    ToolCall,
    ToolResult,
    ToolRun,
    ToolSpec,
    Usage,
    semconv,
    tool_run,
)
from loomgraph.protocols.events import PERMISSION_DECISION, TOOL_CALL, TOOL_PROGRESS, TOOL_RESULT
from loomgraph.protocols.governance import EffectRef
from loomgraph.protocols.idle import is_idle
from loomgraph.protocols.shapes import shape

# The rule of the allow `ToolGate.decide` gives, unreported, for a call that ran before: its
# effect is replayed from the journal, not decided again.
RAN = "journal:ran"


class ToolArgsInvalid(LoomgraphError):
    """The model called one tool with arguments it rejects too many times in a row."""

    def __init__(self, tool: str, times: int, last_error: str) -> None:
        super().__init__(
            f"tool {tool!r} rejected the model's arguments {times} times in a row; "
            f"last: {last_error}"
        )
        self.tool = tool
        self.times = times
        self.last_error = last_error


class ToolGate:
    """Decides, journals and runs the tool calls of one node visit."""

    __slots__ = ("node", "scope")

    def __init__(self, scope: RunScope, node: str) -> None:
        self.scope = scope
        # The node's qualified name, for events and the audit log.
        self.node = node

    async def call(self, call: ToolCall, key: EffectKey, own: OwnTool | None = None) -> ToolResult:
        """One journaled, permission-checked, budgeted call; failures become error results.
        A call of the tool host's, or one the node makes itself (`own`: its spec and what
        acts), which goes the same way: decided, charged, journaled, hooked, audited."""
        scope, deps = self.scope, self.scope.deps
        if scope.listening:
            await scope.emit(TOOL_CALL, {"call": call}, self.node)
        spec = deps.tools.spec(call["tool"]) if own is None else own.spec
        if own is not None and (scope.requested or scope.begun):  # before the run stopped
            key, call = await own_call_key(scope, call, key)
        too_large = None if spec is None else self._args_too_large(call)
        if spec is None or too_large is not None:
            # Not run now; one that ran (its tool since gone, a lower size limit) is replayed
            # all the same: a read on an error path, none for a call that runs.
            ran = await self._journaled(key)
            if is_done(ran):
                return await self._replay(ran, call, spec)
        if spec is None:  # never run, whatever the policy says
            await self.report(call, Decision("deny", "unknown_tool", "no such tool"))
            names = ", ".join(s["name"] for s in deps.tools.specs()) or "none"
            result = ToolResult(
                content=f"unknown tool {call['tool']!r}; available tools: {names}",
                is_error=True,
                error_type="unknown_tool",
            )
            return await self._refused(call, result)
        if too_large is not None:  # never run, never journaled whole
            done = await self._refused(call, too_large, spec)
            self._count_invalid(call, too_large)
            return done
        decided = await self._decide(call, spec, key, own=own is not None)
        if isinstance(decided, EffectRecord):  # it ran: replayed, not decided again
            return await self._replay(decided, call, spec)
        decision, call, tainted = decided
        if decision.verdict != "allow":
            await self.report(call, decision, tainted=tainted)
            await scope.let_go_kept()  # the use of a denying answer, in the log
            reason = decision.reason or decision.rule or "denied"
            result = ToolResult(
                content=f"permission denied for {call['tool']!r}: {reason}",
                is_error=True,
                error_type="permission_denied",
            )
            return await self._refused(call, result, spec)
        prior = await scope.begin_effect(key, TOOL_EFFECT, {"call": call}, self.node)
        scope.begun.add(key.text)
        if is_done(prior):
            # A call the pinned rules alone allow, found done where every effect is: its
            # decision, which can only have come out the same, is not reported for a replay.
            return await self._replay(prior, call, spec)
        await self.report(call, decision, tainted=tainted)
        execution = 1 if prior is None else prior.attempts
        effect = EffectRef(key.text, execution) if scope.deps.budgeted else None  # its hold's
        reservation = await scope.reserve("tool", Usage(tool_calls=1), effect)
        if scope.auditing:
            request = trail.tool_request(call, decision.rule, content=scope.audit_content)
            await scope.audit(AuditAction.TOOL_REQUEST, self.node, request)
            await scope.audit_written()  # in the log before the call can act
            await scope.let_go_kept()  # an approval's use, kept with its answer: let go of
        try:
            capture = scope.tracing and bool(getattr(deps.telemetry, "capture_content", False))
            attributes: Mapping[str, Any] = NO_ATTRIBUTES
            if scope.tracing:
                traced = _span_attributes(call, spec)
                if capture:
                    traced[semconv.GEN_AI_TOOL_CALL_ARGUMENTS] = call["args"]
                attributes = traced
            token = tool_run.set(self._tool_run(call, key))
            try:
                with deps.telemetry.span(semconv.tool_span_name(call["tool"]), attributes) as span:
                    if own is None:
                        result = await deps.tools.call(call, idempotency_key=key.text)
                    else:
                        result = await own.act(call)
                    if result.get("is_error"):
                        span.set_attribute(semconv.ERROR_TYPE, "tool_error")
                    if capture:
                        span.set_attribute(semconv.GEN_AI_TOOL_CALL_RESULT, result.get("content"))
            finally:
                tool_run.reset(token)
        except BaseException:
            # Cancelled or broken mid-call: the tool may have acted, so the call is charged.
            await scope.settle(reservation, Usage(tool_calls=1))
            raise
        result = self._cut(result)
        try:
            # Journaled before it is charged: a charge (or its audit entry) that fails must
            # not leave a call that ran to be run again on resume; its kept hold is charged
            # once, by the resume.
            await scope.end_effect(key, dict(result))
        finally:
            await scope.settle(reservation, Usage(tool_calls=1))
        done = await self._done(call, result, spec)
        self._count_invalid(call, result)
        return done

    def _tool_run(self, call: ToolCall, key: EffectKey) -> ToolRun:
        """What the tool host may know of the run (ToolContext), with a progress reporter."""
        scope, node = self.scope, self.node

        async def progress(message: str, data: dict[str, Any]) -> None:
            # The tool's data sits next to the event's own keys, which win: a tool reporting
            # `tool="ffmpeg"` must not make listeners attach its progress to another call.
            payload = {**data, "call_id": call["id"], "tool": call["tool"], "message": message}
            await scope.emit(TOOL_PROGRESS, payload, node)

        return ToolRun(scope.run_id, scope.user_id, scope.session_id, node, progress, key.text)

    def _args_too_large(self, call: ToolCall) -> ToolResult | None:
        """An error result for arguments over the size limit, or None (an approver's edited
        arguments meet the same limit, in the approval desk)."""
        too_large = args_too_large(call, self.scope.deps.size_limits.tool_args_chars)
        if too_large is None:
            return None
        return ToolResult(content=too_large, is_error=True, error_type=INVALID_ARGUMENTS)

    def _cut(self, result: ToolResult) -> ToolResult:
        """The result, cut to the size limit with a marker the model sees (its images, as
        base64, count towards the limit too: over it they are left out, and said so)."""
        limit = self.scope.deps.size_limits.tool_result_chars
        content = result.get("content", "")
        images = result.get("images") or []
        pictured = sum(len(image["data"]) for image in images)
        if len(content) + pictured <= limit:
            return result
        cut = ToolResult(**result)
        if images:
            cut.pop("images")
            content += f"\n[... {len(images)} image(s) left out: {pictured} characters of base64]"
        if len(content) > limit:
            content = content[:limit] + (
                f"\n[... cut: the tool returned {len(content)} characters; the first {limit} "
                "are shown and kept]"
            )
        cut["content"] = content
        return cut

    def _count_invalid(self, call: ToolCall, result: ToolResult) -> None:
        """Fail the run once a tool rejected the model's arguments too many times in a row:
        a model that cannot produce valid arguments would otherwise loop to a visit limit."""
        counts, tool_name = self.scope.invalid_args, call["tool"]
        if result.get("error_type") != INVALID_ARGUMENTS:
            counts.pop(tool_name, None)
            return
        counts[tool_name] = counts.get(tool_name, 0) + 1
        if counts[tool_name] >= self.scope.deps.max_invalid_tool_args:
            raise ToolArgsInvalid(tool_name, counts[tool_name], result.get("content", ""))

    async def decide(
        self, call: ToolCall, spec: ToolSpec, key: EffectKey
    ) -> tuple[Decision, ToolCall]:
        """The permission verdict for a call (asking for approval when a rule says so), after
        the hooks had their say; reported as an event and in the audit log. A call whose
        effect `key` the journal holds done is allowed as it ran (`RAN`), unreported."""
        decided = await self._decide(call, spec, key, own=True)
        if isinstance(decided, EffectRecord):
            return Decision("allow", RAN, "it ran before the run stopped"), ran_call(decided, call)
        decision, call, tainted = decided
        await self.report(call, decision, tainted=tainted)
        await self.scope.let_go_kept()  # an approval's use, kept with its answer: let go of
        return decision, call

    async def _decide(
        self, call: ToolCall, spec: ToolSpec, key: EffectKey, *, own: bool = False
    ) -> tuple[Decision, ToolCall, bool] | EffectRecord:
        """The verdict on a call, whether it is tainted, and the call as approved — or, for a
        call whose effect the journal holds done, that effect: what ran, ran, whatever a
        hook, an approval or the tool would say now. Unreported, but for a stop to wait."""
        scope, deps = self.scope, self.scope.deps
        # Made only when a call may involve an approval: most calls are simply allowed.
        desk = ApprovalDesk(scope, self.node, call, key, own=own) if scope.requested else None
        hooked = not is_idle(deps.hooks.before_tool)
        # The journal is read before a decision that involves more than the run's pinned
        # rules — an approval, a hook, untrusted text — as those can come out otherwise on a
        # resume (an answer is used once; hooks and tools are not pinned; the run's untrusted
        # text has the results of calls made after this one), and have effects of their own.
        # What the pinned rules alone allow is found done by `begin_effect`: no read here.
        looked, journaled = desk is not None or hooked, None
        if looked:
            journaled = await self._journaled(key)
            if is_done(journaled):
                return journaled
        # Only an egress tool's call can carry untrusted text out: no other call is checked,
        # and none is while the run has seen no untrusted text. It is read as sent and as its
        # tool will receive it (`read`, passed on so the rules do not convert it again).
        tainted, read = False, None
        if spec.get("egress") and scope.untrusted:
            tainted, read = untrusted_in(scope.untrusted, deps.arg_reader, call, spec)
        decision = await permission_for(scope, call, spec, read)
        if tainted and decision.verdict == "allow":
            decision = Decision(deps.on_tainted, TAINT_RULE, TAINT_REASON)
        # Asked about before the run stopped (this very call: its key, tool and arguments):
        # only an approval releases it now — unless a rule denies it now (a set that changed
        # while it waited: a blocklist), a hard limit no approval lifts.
        # (`began`: the call went on before, on an answer since given: it may have acted.)
        prior = await desk.prior_ask(spec, began=journaled is not None) if desk else None
        if prior is not None and decision.verdict != "deny":
            decision = prior
        if decision.verdict != "allow" and not looked:
            journaled = await self._journaled(key)
            if is_done(journaled):
                return journaled
        if decision.verdict == "ask":
            desk = desk or ApprovalDesk(scope, self.node, call, key, own=own)
            try:
                # `began`: the call went on before (unknown after a crash, to run again
                # with its key): the answer read back was used then.
                decision, settled = await desk.settle(
                    spec, decision, tainted=tainted, began=journaled is not None
                )
            except RunStopped:  # the run waits for an answer: say so, as for any decision
                await self.report(call, decision, tainted=tainted)
                raise
            if settled is not call:  # an approver's edited arguments: read them anew
                call, read = settled, None
        if decision.verdict == "allow" and hooked:
            # Hooks read the arguments as the tool will receive them, as rules do, in a copy:
            # what a hook changes there never reaches the tool the rules let through.
            seen = (read if read is not None else received_call(scope, call)) or call
            copied = ToolCall(id=seen["id"], tool=seen["tool"], args=watched(seen["args"]))
            hook: Any = await deps.hooks.before_tool(copied)
            verdict = hook.verdict if isinstance(hook, Decision) else None
            if verdict == "deny":  # hooks may deny, never approve
                decision = hook
            elif hook is not None and verdict not in ("allow", "ask"):
                # A hooks object of the user's own that breaks the protocol fails closed,
                # named by type and size: its value may be the call, kept out of the audit.
                what = "a Decision of no known verdict" if verdict else shape(hook)
                decision = Decision("deny", "hook:error", f"the hooks returned {what}")
        return decision, call, tainted

    async def _journaled(self, key: EffectKey) -> EffectRecord | None:
        """The journal's record of the call's effect, if it was begun before (read only for
        a call the run began before: `RunScope.begun`)."""
        if key.text not in self.scope.begun:
            return None
        return await self.scope.deps.runtime.effect(self.scope.run_id, key.text)

    async def _replay(self, ran: EffectRecord, call: ToolCall, spec: ToolSpec | None) -> ToolResult:
        """The result the journal holds for a call that ran, reported as replayed."""
        replayed = ToolResult(**ran.outcome or {})  # type: ignore[typeddict-item]
        return await self._done(ran_call(ran, call), replayed, spec, replayed=True)

    async def report(self, call: ToolCall, decision: Decision, *, tainted: bool = False) -> None:
        """A decision as a `permission_decision` event and audit entry, naming its rule."""
        if not (self.scope.listening or self.scope.auditing):
            return
        report: dict[str, Any] = {
            "call_id": call["id"],
            "tool": call["tool"],
            "verdict": decision.verdict,
            "rule": decision.rule,
            "reason": decision.reason,
        }
        if tainted:
            report["tainted"] = True
        # Made before the event goes out: an `on_event` hook that edits the event's payload
        # must not change what the audit log records.
        entry = trail.decision(report, call) if self.scope.auditing else None
        if self.scope.listening:
            await self.scope.emit(PERMISSION_DECISION, report, self.node)
        if entry is not None:
            await self.scope.audit(AuditAction.PERMISSION_DECISION, self.node, entry)

    async def _refused(
        self, call: ToolCall, result: ToolResult, spec: ToolSpec | None = None
    ) -> ToolResult:
        """A call the gate did not run (an unknown tool, arguments over the size limit, a
        permission's refusal): traced as an `execute_tool` span in error, the result's
        `error_type` its `error.type`, so a trace shows what the model asked for and why
        nothing ran (the span lasts no time: nothing was executed)."""
        if self.scope.tracing:
            with self.scope.deps.telemetry.span(
                semconv.tool_span_name(call["tool"]), _span_attributes(call, spec)
            ) as span:
                span.set_attribute(semconv.ERROR_TYPE, result.get("error_type") or "refused")
        return await self._done(call, result)

    async def _done(
        self,
        call: ToolCall,
        result: ToolResult,
        spec: ToolSpec | None = None,
        *,
        replayed: bool = False,
    ) -> ToolResult:
        scope = self.scope
        if spec is not None:  # a tool's own result, not an error of the gate's
            note_result(scope.untrusted, spec, result.get("content", ""))
        if scope.auditing:
            done = trail.tool_result(call, result, replayed=replayed, content=scope.audit_content)
            await scope.audit(AuditAction.TOOL_RESULT, self.node, done)
        hooks = scope.deps.hooks
        if not is_idle(hooks.after_tool):  # in copies: a hook only watches what happened
            await hooks.after_tool(watched(call), watched(result))
        if scope.listening:
            await scope.emit(TOOL_RESULT, {"call": call, "result": result}, self.node)
        return result


def _span_attributes(call: ToolCall, spec: ToolSpec | None) -> dict[str, Any]:
    """The `execute_tool` span's attributes of `call` (its tool's type from `spec`)."""
    tool_type = "function" if spec is None else spec.get("tool_type", "function")
    return semconv.tool_attributes(tool=call["tool"], call_id=call["id"], tool_type=tool_type)


def is_done(effect: EffectRecord | None) -> TypeGuard[EffectRecord]:
    """Whether a journaled effect finished with an outcome (replayed, never run again)."""
    return effect is not None and effect.status == EffectStatus.DONE and effect.outcome is not None
