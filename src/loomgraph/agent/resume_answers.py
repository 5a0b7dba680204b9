"""What a resume brings (`answer_for`): a value or an approval, checked against what the run
waits for, and bound to the request it answers (`bound`); `NO_VALUE` when none is given."""

from __future__ import annotations

from typing import Any

from loomgraph.agent.answers import approval, expired, not_answered, pending_of, resume_value
from loomgraph.agent.defaults import NO_VALUE
from loomgraph.agent.resume_errors import (
    AnswerNeeded,
    ApprovalNotPending,
    EditedArgsInvalid,
    ToolNotOffered,
)
from loomgraph.engine.approval_checks import edit_problem, schema_problem
from loomgraph.engine.effects import (
    Approval,
    BoundApproval,
    BoundValue,
    ResumeInput,
    ResumeValue,
)
from loomgraph.graph.compiled import CompiledGraph
from loomgraph.protocols import Deps, RunRecord, ToolCall
from loomgraph.protocols.paths import NodePath

__all__ = ["NO_VALUE", "answer_for", "bound", "unanswered", "usable_here"]


async def answer_for(
    runtime: Any, record: RunRecord, value: Any, approve: Any, given_at: float | None = None
) -> ResumeInput | None:
    """The answer a resume brings, checked against what the run waits for: an answer for a
    run that does not wait for it is refused, not ignored (`given_at`: see `approval`)."""
    if value is not NO_VALUE:
        asked = resume_value(record, value)
        await not_answered(runtime, record)
        return asked
    if approve is not NO_VALUE:
        answer = approval(record, approve, given_at)
        await not_answered(runtime, record, answer.call_id)
        return answer
    return None


def bound(value: Any, approve: Any, answer: ResumeInput | None) -> tuple[Any, Any]:
    """`value` and `approve` bound to the request `answer`, their first check, answers."""
    if isinstance(answer, ResumeValue) and answer.key:
        value = BoundValue(value.value if isinstance(value, BoundValue) else value, answer.key)
    return value, answer if isinstance(answer, BoundApproval) else approve


async def usable_here(
    record: RunRecord, answer: ResumeInput | None, deps: Deps, graph: CompiledGraph
) -> None:
    """Refuse an approval this Agent could only waste, before it is journaled (an approval
    is used once): one allowing a call of a `tools` node of `graph` (the run's, or of a
    graph its `map` and `subgraph` nodes run) to a tool this Agent's tool host does not
    offer (`ToolNotOffered`: the call would be denied as unknown), or edited arguments the
    tool would refuse, as the host running it checks them (`EditedArgsInvalid`: the call
    would fail; `approval_checks.edit_problem`). A call a node asks about of its own (not
    the tool host's: a strategy's memory write) has its edit checked against the parameters
    its request kept (`Pending.schema`). Tools known only once their host has started (MCP
    servers) are listed first, as before a run."""
    pending = pending_of(record)
    call = None if pending is None else pending.call
    if not isinstance(answer, Approval) or not answer.allow or pending is None or not call:
        return
    if _kind_at(graph, pending.node) != "tools":
        if answer.args is not None and pending.schema is not None:
            _fits(call["tool"], schema_problem(answer.args, {"parameters": pending.schema}))
        return
    if deps.startable_tools is not None:
        await deps.startable_tools.start()
    tools = deps.tools
    spec = tools.spec(call["tool"])
    if spec is None:
        offered = ", ".join(s["name"] for s in tools.specs()) or "none"
        raise ToolNotOffered(
            f"run {record.run_id} waits for approval of a call to {call['tool']!r}, a tool "
            f"this agent does not offer (it offers: {offered}); go on with the tools the run "
            "started with. Nothing was journaled: the run still waits"
        )
    if answer.args is None:
        return
    edited = ToolCall(id=call["id"], tool=call["tool"], args=answer.args)
    _fits(call["tool"], edit_problem(tools, edited, spec))


def _fits(tool: str, problem: str | None) -> None:
    """`EditedArgsInvalid` naming `problem`, the edit's misfit with `tool`, unless None."""
    if problem is not None:
        raise EditedArgsInvalid(
            f"the edited arguments do not fit tool {tool!r}: {problem}. Nothing was "
            "journaled: the run still waits"
        )


def _kind_at(graph: CompiledGraph, where: str) -> str | None:
    """The kind of the node at `where` (`tools`, `each/0/tools`: a `map` branch's index
    after its node, `sub/tools`), found down the graphs `map` and `subgraph` nodes run;
    None when the path names no node."""
    parts, compiled = NodePath.parse(where).parts, graph
    at = 0
    while at < len(parts):
        spec = compiled.graph.nodes.get(parts[at])
        if spec is None:
            return None
        if at == len(parts) - 1:
            return spec.kind
        child = getattr(compiled.nodes.get(parts[at]), "compiled_child", None)
        if not isinstance(child, CompiledGraph):
            return None
        compiled, at = child, at + 1
        if parts[at].isdigit() and parts[at] not in compiled.graph.nodes:
            at += 1  # the branch of a `map` node
    return None


def unanswered(record: RunRecord) -> None:
    """Refuse to send a run on without an answer unless it waits for an approval whose
    request expired (then the call is denied as timed out): `AnswerNeeded` while a person may
    still answer; `ApprovalNotPending` for a run that waits for nothing."""
    pending = pending_of(record)
    if pending is None:
        raise ApprovalNotPending(
            f"run {record.run_id} is {record.status}: it waits for no request to go on past "
            "(without an answer, a run is sent on only past an approval request whose "
            "deadline passed)"
        )
    if pending.call and expired(pending):
        return
    asked = f"an approval of call {pending.call['id']}" if pending.call else "a value"
    raise AnswerNeeded(
        f"run {record.run_id} waits for {asked} a person may still give: answer it (without "
        "an answer, a run is sent on only past an approval request whose deadline passed)"
    )
