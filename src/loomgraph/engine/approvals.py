"""Approvals: settling an `ask` for one tool call, durably.

A request for approval is a journaled fact bound to one call: the call's own effect key
(run, node path, visit, slot) and its call id, tool and arguments. Once it is journaled, the
call runs only after an explicit approval of that request — whatever permissions a resuming
Agent has — and the answer is journaled too, so it is used once. Call ids come from the model
and need not be unique: two calls sharing one are asked, and answered, each on its own. A
request whose deadline passed is denied, and the run goes on.

The request (and an answer journaled without one) also records the identity of the tool asked
about (`ToolIdentity`: its origin and a digest of its spec). An answer is used only while the
tool answering to the call's name has that identity: another server's tool of that name, or
the tool changed while the answer waited, gets the call denied (`approval:tool_changed`), and
the model's next call is asked about anew. A request journaled before identities were
recorded is answered as before.

An answer's use is audited once: its `approval` entry is kept in the journal's audit outbox
in the transaction that journals the use (the answer's outcome, marked `use_kept`: a
handler's answer as it is journaled, a person's as the resume takes it up), and let go of
once the log has it, before the call acts (`RunScope.let_go_kept`). A crash before the log
has it leaves it kept: the resume writes it (`restore_kept`) and, reading the marked answer
back, audits no use again; only a call begun before on it, which runs again, adds an entry
marked `replayed`.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

from loomgraph.engine.approval_checks import (
    args_too_large,
    edit_problem,
    edit_too_large,
    same_call,
    schema_problem,
    shape,
    tool_changed,
)
from loomgraph.engine.audit_trail import approval_entry, approval_requested, args_hash
from loomgraph.engine.effects import (
    APPROVAL_KIND,
    APPROVAL_REQUEST_KIND,
    Approval,
    BoundApproval,
    EffectKey,
    approval_intent,
)
from loomgraph.engine.received import permission_for
from loomgraph.engine.scope import RunScope
from loomgraph.engine.taint import TAINT_REASON, TAINT_RULE
from loomgraph.engine.watched import watched
from loomgraph.protocols import (
    AuditAction,
    Decision,
    EffectStatus,
    Pending,
    PinnablePolicy,
    RunStatus,
    RunStopped,
    ToolCall,
    ToolSpec,
)
from loomgraph.protocols.runtime import StopDeferred
from loomgraph.protocols.tool_identity import ToolIdentity

__all__ = ["ApprovalDesk", "args_hash", "args_too_large", "edit_too_large"]

HANDLER = "handler"
# Answers the approval handler may give, for the reason of a refused one.
HANDLER_ANSWERS = "True, False, None, {'args': {...}} or an Approval of this call"
# In an answer's journaled outcome: its use's `approval` entry was kept with it in the
# journal's audit outbox (the log has it, or the run's resume writes it from there).
USE_KEPT = "use_kept"


class ApprovalDesk:
    """Settles the `ask` of one call of one node visit."""

    __slots__ = ("_key", "answer_key", "call", "legacy", "node", "own", "request_key", "scope")

    def __init__(
        self, scope: RunScope, node: str, call: ToolCall, key: EffectKey, *, own: bool = False
    ) -> None:
        self.scope = scope
        self.node = node
        self.call = call
        # A call the node makes itself (`NodeContext.decide_call`), with a spec of its own that
        # no tool host knows: its request keeps the spec's parameters, which a resume's edit
        # is checked against before the approval is used (`agent.resume_answers`), as a
        # handler's edit is against the spec (`_unfit`).
        self.own = own
        # `key` is the call's own effect key: the approval is bound to that one call.
        self._key = key
        self.answer_key = key.approval_of(call["id"])
        self.request_key = key.approval_request_of(call["id"])
        # True once this call's approval was found under the keys of an older journal.
        self.legacy = False

    async def prior_ask(self, spec: ToolSpec, *, began: bool = False) -> Decision | None:
        """The `ask` a request journaled before the run stopped was made under — only an
        approval releases the call now — or None when this call was never asked about. A
        request found at this call's key for another call (not the same tool and arguments),
        or about a tool other than `spec`'s (another origin, another spec), approves nothing:
        the call is denied (`began`: the call was sent before, on an answer since given)."""
        await self._bind(answers=False)
        if str(self.request_key) not in self.scope.requested:
            return None
        request = await self.scope.finished_effect(self.request_key) or {}
        if "call" in request and not same_call(request["call"], self.call):
            self._take_supplied()  # an answer to that request is not one to this call
            return self._mismatch("requested")
        changed = tool_changed(request.get("tool"), spec, self.call, sent=began)
        if changed is not None:
            self._take_supplied()  # nor is it one for the tool answering to that name now
            return changed
        rule = request.get("rule") or "approval:pending"
        return Decision("ask", rule, request.get("reason") or "asked before the run stopped")

    async def settle(
        self, spec: ToolSpec, asked: Decision, *, tainted: bool = False, began: bool = False
    ) -> tuple[Decision, ToolCall]:
        """The answer to `asked`: journaled before, supplied with the resume, given by the
        approval handler, or — with none of these — stop the run to wait for one. `began`:
        the call's own effect was begun before (it went on, on a journaled answer). An
        answer's use is audited once, kept with the journal write that records it."""
        scope, call = self.scope, self.call
        await self._bind(answers=True)
        # Taken now, whatever happens next: an answer is used, refused or expired once,
        # never left for a later call.
        supplied = self._take_supplied()
        earlier = await scope.deps.runtime.effect(scope.run_id, str(self.answer_key))
        if earlier is not None and earlier.status == EffectStatus.DONE:
            # Journaled by the resume that took a person's answer up (`answer_effect`), or
            # answered before a crash: that answer stands, for the call it was given for.
            if not same_call(earlier.intent.get("call"), call):
                return self._mismatch("answered"), call
            # An answer journaled with no request (an approval handler's, before a crash)
            # names the tool it was given for; one to a request was checked by `prior_ask`.
            changed = tool_changed(earlier.intent.get("tool"), spec, call, sent=began)
            if changed is not None:
                return changed, call
            outcome = earlier.outcome or {}
            answer = Approval.from_journal(
                call["id"], outcome.get("answer"), outcome.get("by", ""), outcome.get("reason", "")
            )
            if scope.auditing:
                await self._audit_read_back(answer, outcome, began)
        else:
            answer = await self._new_answer(spec, asked, tainted, supplied)
            intent = {**approval_intent(call), "tool": ToolIdentity.of(spec).to_dict()}
            await scope.begin_effect(self.answer_key, APPROVAL_KIND, intent, self.node)
            if not await self._journal_use(answer, answer.outcome()):
                await scope.end_effect(self.answer_key, answer.outcome())
                if scope.auditing:  # kept nowhere: it goes with the gate's `tool_request`
                    await self._audit(answer, replayed=False)
        if not answer.allow:
            reason = answer.reason or "the user denied this call"
            return Decision("deny", "approval:denied", reason), call
        if answer.args is not None:
            call = ToolCall(id=call["id"], tool=call["tool"], args=dict(answer.args))
            again = await permission_for(scope, call, spec)
            if again.verdict == "deny":  # edited arguments meet the rules again
                return again, call
        return Decision("allow", "approval:granted", asked.rule), call

    async def _new_answer(
        self, spec: ToolSpec, asked: Decision, tainted: bool, supplied: Approval | None
    ) -> Approval:
        scope, call = self.scope, self.call
        request = await scope.finished_effect(self.request_key)
        # Known before anyone is asked: an answer that comes back after it is late.
        deadline = (
            self._deadline(asked, time.time()) if request is None else request.get("deadline")
        )
        if deadline and time.time() > deadline:
            return self._timed_out()
        refused = None
        if supplied is not None:
            refused = self._too_large(supplied)
            if refused is None:
                return supplied
            # Refused before anything is journaled: the run waits for another answer.
            refused = f"the approval of call {call['id']!r} was refused: {refused}"
        else:
            handled = await self._handler_answer(asked, spec, tainted)
            if handled is not None:
                return self._timed_out() if deadline and time.time() > deadline else handled
        if request is None:
            if scope.asking:  # a sibling branch's request stops the run: asked on its resume
                raise StopDeferred(
                    RunStatus.AWAITING_APPROVAL,
                    f"tool {call['tool']!r} asks after the request the run stops at",
                )
            scope.asking = True
            request = self._request(spec, asked, tainted)
            await scope.begin_effect(self.request_key, APPROVAL_REQUEST_KIND, request, self.node)
            await scope.end_effect(self.request_key, request)
            if scope.auditing:
                asking = approval_requested(call, request)
                await scope.audit(AuditAction.APPROVAL_REQUESTED, self.node, asking)
        scope.asking = True  # (a request journaled before: the run stops at it too)
        raise RunStopped(
            RunStatus.AWAITING_APPROVAL,
            refused or f"tool {call['tool']!r} needs approval ({request['rule']})",
            Pending(
                self.node,
                call=call,
                rule=request["rule"],
                key=str(self.answer_key),
                tainted=bool(request.get("tainted")),
                asked_at=request.get("asked_at"),
                deadline=request.get("deadline"),
                tool=ToolIdentity.from_dict(request.get("tool")),
                schema=request.get("schema"),
            ),
        )

    def _timed_out(self) -> Approval:
        return Approval(self.call["id"], False, approver="timeout", reason="approval timed out")

    def _deadline(self, asked: Decision, now: float) -> float | None:
        """When an answer to `asked`, asked at `now`, comes too late (the policy's
        `approval_timeout`, given the run's user when it takes one), or None: never."""
        permissions = self.scope.deps.permissions
        if not isinstance(permissions, PinnablePolicy):
            return None
        timeout_of: Any = permissions.approval_timeout
        if "user_id" in inspect.signature(timeout_of).parameters:
            timeout = timeout_of(asked.rule, user_id=self.scope.user_id)
        else:  # a policy written to the protocol's older signature
            timeout = timeout_of(asked.rule)
        return None if timeout is None else now + timeout

    def _request(self, spec: ToolSpec, asked: Decision, tainted: bool) -> dict[str, Any]:
        now = time.time()
        request = {
            "call": self.call,
            "rule": asked.rule,
            "reason": asked.reason,
            "tainted": tainted,
            "asked_at": now,
            "deadline": self._deadline(asked, now),
            # The tool the person is asked about: the answer covers that tool only.
            "tool": ToolIdentity.of(spec).to_dict(),
        }
        if self.own and isinstance(spec.get("parameters"), dict):
            request["schema"] = spec["parameters"]
        return request

    async def _bind(self, *, answers: bool) -> None:
        """Use the keys of an older journal when this call was asked about (or, with
        `answers`, answered) under them: there, the request and answer of a visit's calls with
        one id shared one key, so they are this call's only when they name its tool and
        arguments. Answers are looked for only for a call that asks: it costs a read."""
        scope, call = self.scope, self.call
        if self.legacy or str(self.request_key) in scope.requested:
            return
        old_request = self._key.legacy_approval_request_of(call["id"])
        old_answer = self._key.legacy_approval_of(call["id"])
        if str(old_request) in scope.requested:
            request = await scope.finished_effect(old_request) or {}
            found = same_call(request.get("call"), call)
        elif not answers:
            return
        else:  # an approval handler's answer journaled just before a crash
            answer = await scope.deps.runtime.effect(scope.run_id, str(old_answer))
            found = (
                answer is not None
                and answer.status == EffectStatus.DONE
                and same_call(answer.intent.get("call"), call)
            )
        if found:
            self.legacy = True
            self.request_key, self.answer_key = old_request, old_answer

    def _take_supplied(self) -> Approval | None:
        """The answer the run was resumed with when it is for this call — matched by the
        pending request's full key, not the call id alone — taken so no other call gets it."""
        supplied = self.scope.resume
        if not isinstance(supplied, Approval) or supplied.call_id != self.call["id"]:
            return None
        if isinstance(supplied, BoundApproval) and supplied.key:
            if supplied.key != str(self.answer_key):
                return None
        elif not self.legacy:  # only a run journaled before pending requests named their key
            return None
        self.scope.resume = None
        return supplied

    async def _handler_answer(
        self, asked: Decision, spec: ToolSpec, tainted: bool = False
    ) -> Approval | None:
        """The approval handler's answer; None to stop and wait. Anything but the answers it
        may give denies the call, naming what it returned by its `shape` (fail closed), and
        so does an edit the tool would refuse (`edit_problem`: the handler's mistake, said
        as such, not a failed call of the model's). A
        call carrying untrusted text (`tainted`) is asked about with a reason that says so,
        as `runs pending` marks it, whichever rule asks."""
        handler, call = self.scope.deps.approval_handler, self.call
        if handler is None:
            return None
        if tainted and asked.rule != TAINT_RULE:  # the taint rule's own reason says so
            why = f"{asked.reason}; {TAINT_REASON}" if asked.reason else TAINT_REASON
            asked = Decision(asked.verdict, asked.rule, why)
        raw: Any = handler(watched(call), asked)  # a copy: only an edit it returns counts
        if inspect.isawaitable(raw):
            raw = await raw
        if raw is None:
            return None
        if raw is True or raw is False:
            answer = Approval(call["id"], raw, approver=HANDLER)
        elif isinstance(raw, dict) and set(raw) == {"args"} and raw["args"] is not None:
            # Arguments that are not a dict, or not plain JSON, are named below.
            answer = Approval(call["id"], True, raw["args"], approver=HANDLER)
        elif isinstance(raw, Approval) and raw.call_id == call["id"]:
            answer = raw
        else:
            what = (
                f"an Approval of call {raw.call_id!r}" if isinstance(raw, Approval) else shape(raw)
            )
            return self._refused(f"the approval handler returned {what}, not {HANDLER_ANSWERS}")
        problem = answer.problem() or self._too_large(answer) or self._unfit(answer, spec)
        if problem is not None:
            return self._refused(f"the approval handler's answer cannot be used: {problem}")
        return answer

    def _refused(self, why: str) -> Approval:
        return Approval(self.call["id"], False, approver=HANDLER, reason=f"{why}; call denied")

    def _unfit(self, answer: Approval, spec: ToolSpec) -> str | None:
        """Edited arguments the call's tool would refuse, as its host checks them — or, for
        a node's own call, which no host knows, as its spec's parameters do. Said without
        the host's words, which quote values: the reason is audited, and arguments go into
        the audit log only as their hash."""
        if not answer.allow or answer.args is None:
            return None
        call = self.call
        edited = ToolCall(id=call["id"], tool=call["tool"], args=dict(answer.args))
        if self.own:
            problem = schema_problem(edited["args"], spec)
        else:
            problem = edit_problem(self.scope.deps.tools, edited, spec)
        if problem is None:
            return None
        return f"the edited arguments do not fit tool {call['tool']!r} (its call would refuse them)"

    def _too_large(self, answer: Approval) -> str | None:
        """Edited arguments over the size limit, refused as the model's would be."""
        return edit_too_large(self.call, answer, self.scope.deps.size_limits.tool_args_chars)

    def _mismatch(self, what: str) -> Decision:
        call = self.call
        return Decision(
            "deny",
            "approval:mismatch",
            f"the approval {what} for call {call['id']!r} at this point of the run was for "
            f"another call (not {call['tool']!r} with these arguments); it approves nothing",
        )

    async def _journal_use(self, answer: Approval, outcome: dict[str, Any]) -> bool:
        """Journal `outcome`, the answer's, as used: marked `USE_KEPT`, its `approval` entry
        kept in the journal's audit outbox in the same transaction and queued for the log
        (`RunScope.end_effect_keeping`), so the log gets that use once whatever stops the
        run next. False, nothing written, when the run audits nothing or its journal keeps
        no entries."""
        if not self.scope.auditing:
            return False
        entry = (AuditAction.APPROVAL, self.node, self._entry(answer, replayed=False))
        return await self.scope.end_effect_keeping(
            self.answer_key, {**outcome, USE_KEPT: True}, entry
        )

    async def _audit_read_back(
        self, answer: Approval, outcome: dict[str, Any], began: bool
    ) -> None:
        """Audit an answer read back from the journal: a replay of its use for a call begun
        before on it (it runs again with its key); nothing for one never begun whose use
        was kept with it (`USE_KEPT`: in the log, or written from the journal's outbox at
        this resume's start); else, the answer the resume took up (journaled by it, or by a
        journal that keeps no entries), this is its use."""
        if began:
            await self._audit(answer, replayed=True)
            return
        if outcome.get(USE_KEPT) is True or await self._journal_use(answer, outcome):
            return
        # Nothing keeps it: in the log before the call is begun on it.
        await self._audit(answer, replayed=False)
        await self.scope.audit_written()

    def _entry(self, answer: Approval, *, replayed: bool) -> dict[str, Any]:
        return approval_entry(
            self.call, answer.allow, answer.approver, answer.args, answer.reason, replayed=replayed
        )

    async def _audit(self, answer: Approval, *, replayed: bool) -> None:
        await self.scope.audit(
            AuditAction.APPROVAL, self.node, self._entry(answer, replayed=replayed)
        )
