"""The audit trail's payloads: what each entry a run records holds.

Entries carry names, ids, counts, statuses and SHA-256 hashes of arguments. Prompts, model
answers, tool arguments, tool output, memory and run state are added only when the audit
log captures content (`capture_content=True`, read once per run as `RunScope.audit_content`);
keys and credentials never are. docs/observability.md lists every entry. Callers build a
payload only when `RunScope.auditing` is true, so the no-op log costs no work per step.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from loomgraph.errors import error_summary
from loomgraph.protocols import (
    Message,
    ModelRequest,
    ModelResponse,
    Reservation,
    ToolCall,
    ToolResult,
    Usage,
)

__all__ = [
    "BUDGET_ACTOR",
    "RUNTIME_ACTOR",
    "RUN_ACTOR",
    "approval_entry",
    "args_hash",
    "audit_restored",
    "budget",
    "decision",
    "model_call",
    "run_completed",
    "run_started",
    "tool_request",
    "tool_result",
    "transition",
]

# The actors of entries no node makes.
RUN_ACTOR = "agent"
BUDGET_ACTOR = "budget"
RUNTIME_ACTOR = "runtime"


def args_hash(args: Any) -> str:
    """A stable hash of a call's arguments, for the audit log (which keeps no argument)."""
    text = json.dumps(args, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def approval_requested(call: ToolCall, request: Mapping[str, Any]) -> dict[str, Any]:
    """`approval_requested`: the call asked about (by its arguments' hash), the rule, whether
    it was tainted, its deadline and the identity of the tool asked about."""
    return {
        "call_id": call["id"],
        "tool": call["tool"],
        "rule": request["rule"],
        "args_hash": args_hash(call["args"]),
        "tainted": request["tainted"],
        "deadline": request["deadline"],
        "tool_identity": request["tool"],
    }


def run_started(
    graph: str,
    graph_hash: str,
    session_id: str | None,
    *,
    continued: bool,
    prompt: str | None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """`run_started`: the graph and its version, whether the run goes on from a checkpoint
    (a resume or a fork), the run a fork was made from; the prompt only with capture."""
    payload: dict[str, Any] = {"graph": graph, "graph_hash": graph_hash, "continued": continued}
    if session_id is not None:
        payload["session_id"] = session_id
    if parent_run_id is not None:
        payload["parent_run_id"] = parent_run_id
    if prompt is not None:
        payload["prompt"] = prompt
    return payload


def run_completed(
    status: str,
    reason: str,
    usage: Usage,
    *,
    output: Any = None,
    content: bool = False,
    error: BaseException | None = None,
) -> dict[str, Any]:
    """`run_completed`: how the run ended and what it used; the output only with capture.

    A failed run's reason is its `error`'s message, which can quote what the run handled (a
    tool's rejected arguments, an answer that did not fit): without capture the entry says
    only which node failed with which error type (`error_summary`)."""
    if error is not None and not content and str(status) == "failed":
        reason = error_summary(error)
    payload: dict[str, Any] = {"status": str(status), "reason": reason, "usage": usage.to_dict()}
    if content:
        payload["output"] = output
    return payload


def model_call(
    model: str, request: ModelRequest, response: ModelResponse, *, content: bool
) -> dict[str, Any]:
    """`model_call`: the model, usage, why it stopped and which tools it asked for."""
    payload: dict[str, Any] = {
        "model": model,
        "usage": response.usage.to_dict(),
        "finish_reason": response.finish_reason,
        "tool_calls": [_call_ref(call, content) for call in response.tool_calls],
    }
    if content:
        payload["system"] = request.system
        payload["messages"] = [_message(m) for m in request.messages]
        payload["text"] = response.text
    return payload


def model_call_failed(
    model: str, error: BaseException, usage: Usage, *, content: bool
) -> dict[str, Any]:
    """`model_call` of a call that gave up: the model, what its attempts billed, the error:
    its type and the provider's HTTP status; its message (cut short) only with capture, as
    a provider may quote the prompt in it."""
    failure: dict[str, Any] = {"type": type(error).__name__}
    status = getattr(error, "status", None)
    if isinstance(status, int):
        failure["status"] = status
    if content:
        failure["message"] = str(error)[:500]
    return {"model": model, "usage": usage.to_dict(), "finish_reason": "error", "error": failure}


def tool_request(call: ToolCall, rule: str, *, content: bool) -> dict[str, Any]:
    """`tool_request`: a call about to run, with the rule that allowed it."""
    payload = _call_ref(call, content)
    payload["rule"] = rule
    return payload


def tool_result(
    call: ToolCall, result: ToolResult, *, replayed: bool, content: bool
) -> dict[str, Any]:
    """`tool_result`: whether the call failed (and how); its output only with capture."""
    payload: dict[str, Any] = {
        "call_id": call["id"],
        "tool": call["tool"],
        "is_error": bool(result.get("is_error", False)),
    }
    if result.get("error_type"):
        payload["error_type"] = result.get("error_type")
    if replayed:
        payload["replayed"] = True
    if content:
        payload["content"] = result.get("content", "")
    return payload


def approval_entry(
    call: ToolCall,
    allow: bool,
    approver: str,
    edited: dict[str, Any] | None,
    reason: str,
    *,
    replayed: bool,
) -> dict[str, Any]:
    """`approval`: the answer used for a call, by whom, with the hashes of its arguments (and
    of an approver's edit); `replayed` when it was used before, read back from the journal."""
    payload: dict[str, Any] = {
        "call_id": call["id"],
        "tool": call["tool"],
        "allow": allow,
        "approver": approver,
        "args_hash": args_hash(call["args"]),
    }
    if edited is not None:
        payload["edited_args_hash"] = args_hash(edited)
    if reason:
        payload["reason"] = reason
    if replayed:
        payload["replayed"] = True
    return payload


def decision(report: dict[str, Any], call: ToolCall) -> dict[str, Any]:
    """`permission_decision`: the decision as its event reports it, plus the arguments' hash."""
    return {**report, "args_hash": args_hash(call["args"])}


def budget(
    reservation: Reservation,
    actual: Usage | None = None,
    added: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """`budget_reserve` / `_settle` / `_release`: the hold and, once settled, what was spent
    and what that added to the spending (`charged`, when the budget says: nothing for a
    process whose hold a resume had charged already)."""
    payload: dict[str, Any] = {
        "kind": reservation.kind,
        "reservation": reservation.id,
        "amount": reservation.amount.to_dict(),
    }
    if actual is not None:
        payload["actual"] = actual.to_dict()
    if added is not None:
        payload["charged"] = dict(added)
    return payload


def audit_restored(count: int) -> dict[str, Any]:
    """`audit_restored`: how many entries an outage cut off the run follow, kept in its
    journal since (`engine.audit_writer.restore_kept`)."""
    return {"count": count}


def transition(seq: int, node: str, visit: int, target: str) -> dict[str, Any]:
    """`transition`: which node ran (which visit), at which seq, and where the run goes next."""
    return {"seq": seq, "node": node, "visit": visit, "next": target}


def _call_ref(call: ToolCall, content: bool) -> dict[str, Any]:
    ref: dict[str, Any] = {
        "call_id": call["id"],
        "tool": call["tool"],
        "args_hash": args_hash(call["args"]),
    }
    if content:
        ref["args"] = call["args"]
    return ref


def _message(message: Message) -> dict[str, Any]:
    return dict(message)
