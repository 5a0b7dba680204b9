"""`loomgraph mcp-serve`'s approvals: what a waiting run asks (`awaiting_approval_of`), an
approver's list of every user's calls that wait (`waiting_calls`, the `approvals` tool), and
an answer bound to the request it names (`approval_answer`). An approver answers any user's
run of the agent, as over HTTP, and is told of another user's run only what the list shows:
its id, status and what it waits for next (`answered_elsewhere`), never its events or answer.

The `mcp` SDK is imported only when the command runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loomgraph.protocols import Pending, RunRecord, ToolCall
    from loomgraph.protocols.events import Event
    from loomgraph.serve.auth import Caller
    from loomgraph.serve.store import ServeStore

__all__ = ["answered_elsewhere", "approval_answer", "awaiting_approval_of", "waiting_calls"]

# The `approvals` tool lists at most this many runs a call (the HTTP API's default page).
MAX_LISTED = 50


def awaiting_approval_of(pending: Pending, call: ToolCall) -> dict[str, Any]:
    """`call`, which a run waits for an approver on (`pending.call`), as a tool result shows
    it, with the `key` an answer must name (the answer settles that request or nothing),
    its deadline (epoch seconds, or None) and whether it passed (then `resume` with neither
    answer sends the run on)."""
    from loomgraph.agent.answers import expired

    return {
        "tool": call["tool"],
        "args": call.get("args"),
        "rule": pending.rule,
        "call_id": call["id"],
        "key": pending.key,
        "deadline": pending.deadline,
        "expired": expired(pending),
    }


def _shown(record: RunRecord) -> dict[str, Any]:
    """A run as an approver is told of it: its id, status and the call it waits for."""
    from loomgraph.agent.answers import pending_of

    pending = pending_of(record)
    shown: dict[str, Any] = {"run_id": record.run_id, "status": str(record.status)}
    if pending is not None and pending.call:
        shown["awaiting_approval"] = awaiting_approval_of(pending, pending.call)
    return shown


def _waiting(record: RunRecord) -> dict[str, Any]:
    """A run in the approver's list: also whose it is and what it was asked."""
    from loomgraph.serve.views import input_of

    return {**_shown(record), "user_id": record.user_id, "input": input_of(record)}


async def waiting_calls(
    runs: ServeStore, agent: str, who: Caller, limit: int, cursor: str | None
) -> dict[str, Any]:
    """Every user's runs of `agent` waiting for an approver, newest first, `limit` of them
    from `cursor` on (the last run id of the page before), and the next page's cursor."""
    from loomgraph.serve.errors import BadRequest, Forbidden
    from loomgraph.serve.store import awaiting_approval

    if not who.approver:
        raise Forbidden(f"user {who.user_id!r} may not answer approvals (no approver role)")
    if not 1 <= limit <= MAX_LISTED:
        raise BadRequest(f"limit must be from 1 to {MAX_LISTED}, got {limit}")
    page = await awaiting_approval(runs, agent, limit=limit, cursor=cursor)
    return {"runs": [_waiting(r) for r in page.runs], "cursor": page.cursor}


def approval_answer(record: RunRecord, approve: bool, args: Any, key: str, who: Caller) -> Any:
    """The caller's answer to the request `key` names, journaled with the caller as approver;
    a tool error when `key` is missing, and the `ResumeError` the resume would raise when the
    run does not wait for that request (an answer resent after the run went on)."""
    from mcp.server.mcpserver.exceptions import ToolError

    from loomgraph.agent.answers import approval, pending_of
    from loomgraph.engine.effects import BoundApproval
    from loomgraph.protocols import RunStatus

    pending = pending_of(record)
    call = pending.call if pending is not None else None
    waiting = record.status == RunStatus.AWAITING_APPROVAL and call
    # Only a run journaled before requests had keys waits for a request without one.
    if waiting and pending is not None and call and pending.key and not key:
        raise ToolError(
            f"key is required with approve: the awaiting_approval.key of the request you "
            f"answer (run {record.run_id!r} waits for request {pending.key}, call "
            f"{call['id']}); without it an answer could settle a later request nobody saw"
        )
    edited = args if approve else None  # (args come only with approve: `resume` checks)
    answer = BoundApproval(call["id"] if call else "", approve, edited, who.user_id, key=key)
    # Checked now as the resume checks it again under the run's lease (a request that
    # changed meanwhile is refused there too).
    approval(record, answer)
    return answer


async def answered_elsewhere(
    stream: AsyncIterator[Event], runs: ServeStore, agent: str, run_id: str
) -> dict[str, Any]:
    """Drive another user's run the approver answered to where it stops, relaying nothing of
    it; then its id, status and what it waits for next, as the approver's list shows them."""
    from mcp.server.mcpserver.exceptions import ToolError

    from loomgraph.serve.run_pages import EVERYONE

    async for _ in stream:
        pass
    record = await runs.run(run_id, EVERYONE, agent=agent)
    if record is None:  # (it was there a moment ago: a journal another process pruned)
        raise ToolError(f"no run {run_id!r}")
    return _shown(record)
