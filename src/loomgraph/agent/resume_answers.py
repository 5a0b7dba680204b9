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
    TOOL_EFFECT,
    Approval,
    BoundApproval,
    BoundValue,
    EffectKey,
    ResumeInput,
    ResumeValue,
)
from loomgraph.graph.compiled import CompiledGraph
from loomgraph.protocols import Deps, EffectStatus, RunRecord, RunStatus, ToolCall
from loomgraph.protocols.paths import NodePath

__all__ = ["NO_VALUE", "answer_for", "bound", "owed_tools_offered", "unanswered", "usable_here"]


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
    """Refuse a resume this Agent could only lose work in or waste an answer on, before
    anything is journaled (an approval is used once).

    The run owes a call of a `tools` node of `graph` (the run's, or of a graph its `map` and
    `subgraph` nodes run) to a tool this Agent's tool host does not offer: it waits for
    approval of the call, or was cut off during it (`ToolNotOffered`, whatever the answer;
    going on, the call would be told the tool is unknown: a request asked of a person
    dropped, a call that may have acted left unreported). Or an approval's edited arguments
    the tool would refuse, as the host running it checks them (`EditedArgsInvalid`: the call
    would fail; `approval_checks.edit_problem`). A call a node asks about of its own (not the
    tool host's: a strategy's memory write) has its edit checked against the parameters its
    request kept (`Pending.schema`). Tools known only once their host has started (MCP
    servers) are listed first, as before a run. A dead letter is refused as one, under its
    lease (`recovery.begin_recovery`), whatever the tools: its `retry` checks them."""
    if record.status != RunStatus.DEAD_LETTER:
        await owed_tools_offered(record, deps, graph)
    pending = pending_of(record)
    call = None if pending is None else pending.call
    if not isinstance(answer, Approval) or not answer.allow or not call or answer.args is None:
        return
    if pending is None or _kind_at(graph, pending.node) != "tools":
        if pending is not None and pending.schema is not None:
            _fits(call["tool"], schema_problem(answer.args, {"parameters": pending.schema}))
        return
    spec = deps.tools.spec(call["tool"])  # offered (`_offered`)
    if spec is not None:
        edited = ToolCall(id=call["id"], tool=call["tool"], args=answer.args)
        _fits(call["tool"], edit_problem(deps.tools, edited, spec))


async def owed_tools_offered(record: RunRecord, deps: Deps, graph: CompiledGraph) -> None:
    """`ToolNotOffered` unless this Agent offers the tool of every call of a `tools` node of
    `graph` the run owes: the one it waits for approval of, and each it was cut off during."""
    pending = pending_of(record)
    node_kind = None if pending is None else _kind_at(graph, pending.node)
    asked = pending.call if pending is not None and node_kind == "tools" else None
    cut_off = await _calls_cut_off(deps.runtime, record.run_id, graph)
    if asked or cut_off:
        await _offered(record.run_id, deps, asked, cut_off)


async def _offered(
    run_id: str, deps: Deps, asked: ToolCall | None, cut_off: list[ToolCall]
) -> None:
    """`ToolNotOffered` unless this Agent's tool host offers the tool of the call the run
    waits for approval of (`asked`) and of each call it was cut off during (`cut_off`)."""
    if deps.startable_tools is not None:
        await deps.startable_tools.start()
    tools = deps.tools
    owed = [(call, True) for call in cut_off] + ([(asked, False)] if asked else [])
    for call, was_cut_off in owed:
        if tools.spec(call["tool"]) is not None:
            continue
        offered = ", ".join(s["name"] for s in tools.specs()) or "none"
        owes = (
            f"was cut off during a call to {call['tool']!r}, which may have taken effect"
            if was_cut_off
            else f"waits for approval of a call to {call['tool']!r}"
        )
        raise ToolNotOffered(
            f"run {run_id} {owes}, a tool this agent does not offer (it offers: {offered}); "
            "go on with the tools the run started with. Nothing was journaled: the run "
            + ("still waits" if not was_cut_off else "is as it was")
        )


async def _calls_cut_off(runtime: Any, run_id: str, graph: CompiledGraph) -> list[ToolCall]:
    """The calls of `tools` nodes whose effect the run began but never ended (a crash cut
    them off): a resume reports each and makes it again."""
    cut_off = []
    for effect in await runtime.effects(run_id):
        if effect.kind != TOOL_EFFECT or effect.status not in _UNFINISHED:
            continue
        call, node = effect.intent.get("call"), EffectKey.node_of(effect.key, run_id)
        if isinstance(call, dict) and _kind_at(graph, node) == "tools":
            cut_off.append(ToolCall(id=call["id"], tool=call["tool"], args=call["args"]))
    return cut_off


_UNFINISHED = frozenset({EffectStatus.PENDING, EffectStatus.UNKNOWN_AFTER_CRASH})


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
