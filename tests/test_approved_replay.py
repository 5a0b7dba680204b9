"""A call that ran on its approval is replayed, not decided again, when its run goes on; the
audit trail of that replay (found by a probe; each test failed before its fix). Below the
probe's tests, what the fix must also hold: the same for calls the rules allowed (hooks,
taint), no new decision reported, a removed tool, and the existing rule for a call begun and
not finished (each failed before the fix but the last, which pins that an answer the call
never went on is not asked again and is audited as a use).

Real parts only: SQLite journal files, the `loomgraph` command in a subprocess, side effects
counted outside the journal (a list in process, a ledger file for the subprocess)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent, tool
from loomgraph.authoring.library import load_graph
from loomgraph.authoring.loader import graph_from_data
from loomgraph.engine.effects import Approval
from loomgraph.governance import Hooks
from loomgraph.models import ScriptedModel
from loomgraph.observability import FileAuditLog
from loomgraph.protocols import Decision, ModelRequest
from loomgraph.runtime import SqliteRuntime

WAIT = 30  # seconds any awaited event may take at most

PAID: list[dict[str, Any]] = []


@tool(destructive=True)
def pay(to: str, amount: int) -> str:
    """Pay someone."""
    PAID.append({"to": to, "amount": amount})
    return f"paid {amount} to {to}"


@tool(destructive=True, name="pay")
def pay_reworded(to: str, amount: int) -> str:
    """Pay someone (now with a reworded description, as a new deploy may have it)."""
    PAID.append({"to": to, "amount": amount})
    return f"paid {amount} to {to}"


def pay_then_report(request: ModelRequest) -> Any:
    """One payment, then an answer quoting what the tool said."""
    if request.call_index == 0:
        return {"tool_calls": [{"id": "c1", "tool": "pay", "args": {"to": "acme", "amount": 5}}]}
    said = [str(m.get("content")) for m in request.messages if m.get("role") == "tool"]
    return "tool said: " + " | ".join(said)


@pytest.fixture(autouse=True)
def _clear() -> None:
    PAID.clear()


async def cancelled_after_the_approved_payment(runtime: SqliteRuntime, audit: Any = None) -> str:
    """A run that asked about `pay`, was approved by alice, paid, and was cancelled before
    its tools node was journaled as done (a hook still watching the result): its id."""
    options: dict[str, Any] = {} if audit is None else {"audit_log": audit()}
    asking = Agent(
        "x", model=ScriptedModel(pay_then_report), tools=[pay], runtime=runtime, **options
    )
    first = await asking.run("pay acme")
    assert first.status == "awaiting_approval" and PAID == []
    paid = asyncio.Event()
    watching = Hooks(timeout=None)

    @watching.after_tool
    async def hold(call: Any, result: Any) -> None:
        paid.set()
        await asyncio.Event().wait()  # still watching when the run is cancelled

    approving = Agent(
        "x",
        model=ScriptedModel(pay_then_report),
        tools=[pay],
        runtime=runtime,
        hooks=watching,
        **({} if audit is None else {"audit_log": audit()}),
    )
    going = asyncio.create_task(
        approving.resume(first.run_id, approve=Approval("c1", True, approver="alice"))
    )
    await asyncio.wait_for(paid.wait(), WAIT)
    going.cancel()
    with pytest.raises(asyncio.CancelledError):
        await going
    record = await runtime.load_run(first.run_id)
    assert record is not None and record.status == "cancelled"
    assert PAID == [{"to": "acme", "amount": 5}]
    return first.run_id


def limits_hooks(kind: str) -> Hooks:
    """A `before_tool` hook as a user writes it: a daily limit of one payment (met now, by
    the payment that ran), or a limits service that is down when the run is resumed."""
    hooks = Hooks()
    if kind == "hook_denies":

        @hooks.before_tool
        def one_payment_a_day(call: Any) -> Decision | None:
            if call["tool"] == "pay" and PAID:
                return Decision("deny", "daily-limit", "one payment a day")
            return None

    else:

        @hooks.before_tool
        def limits_service(call: Any) -> None:
            raise ConnectionError("limits service down")

    return hooks


@pytest.mark.parametrize("change", ["hook_denies", "hook_fails", "tool_reworded"])
async def test_a_payment_that_ran_on_its_approval_is_replayed_not_reported_denied(
    tmp_path: Path, change: str
) -> None:
    """A user approves a payment; it runs, and the run is cancelled before the tools node is
    journaled done. Resumed (`Agent.resume`, as `runs resume` does) by an agent whose
    `before_tool` hook now denies (the daily limit the payment itself used up), whose hook
    fails (its service is down), or whose `pay` tool was reworded by a deploy: the journal
    holds the payment's result, yet the call is decided again before it is replayed
    (`engine/tool_gate.py`: `decide` runs before `begin_effect` finds the done effect), so
    the model is told "permission denied" for a payment that went through — the resumed
    run ends otherwise than the uninterrupted one, and a model may pay again."""
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    run_id = await cancelled_after_the_approved_payment(runtime)
    hooks = Hooks() if change == "tool_reworded" else limits_hooks(change)
    tools = [pay_reworded] if change == "tool_reworded" else [pay]
    later = Agent(
        "x", model=ScriptedModel(pay_then_report), tools=tools, runtime=runtime, hooks=hooks
    )
    done = await later.resume(run_id)
    assert done.status == "completed", done.reason
    assert PAID == [{"to": "acme", "amount": 5}]  # ran once, not again
    # What the journal holds for the call, and what the model was told, are the same.
    effects = {e.key: e for e in await runtime.effects(run_id)}
    assert effects[f"{run_id}:tools:1:1"].outcome["content"] == "paid 5 to acme"
    assert done.output == "tool said: paid 5 to acme", done.output
    await runtime.close()


async def test_a_resume_after_the_approved_call_ran_does_not_audit_a_second_approval(
    tmp_path: Path,
) -> None:
    """alice approves one payment; it runs and the run is cancelled before its tools node is
    journaled done; a plain resume replays the payment (its `tool_result` says
    `replayed: true`) but writes a second `approval` entry by alice, not marked replayed
    (`engine/approvals.py` `settle` audits every answer it reads back from the journal): the
    audit log says the approval was used twice, for one payment made once."""
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    path = tmp_path / "audit.jsonl"

    def audit() -> FileAuditLog:
        return FileAuditLog(path, unsigned=True)

    run_id = await cancelled_after_the_approved_payment(runtime, audit)
    later = Agent(
        "x", model=ScriptedModel(pay_then_report), tools=[pay], runtime=runtime, audit_log=audit()
    )
    done = await later.resume(run_id)
    assert done.status == "completed" and len(PAID) == 1
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    results = [e["payload"] for e in entries if e["action"] == "tool_result"]
    assert [r.get("replayed", False) for r in results] == [False, True]  # ran once, replayed
    used = [
        e["payload"]
        for e in entries
        if e["action"] == "approval" and not e["payload"].get("replayed")
    ]
    assert len(used) == 1, used  # one approval, used once
    await runtime.close()


# ---------------------------------------------------------------- what the fix must also hold


@tool(name="send")
def send(to: str, amount: int) -> str:
    """Send someone money (not destructive: the rules allow it without asking)."""
    PAID.append({"to": to, "amount": amount})
    return f"sent {amount} to {to}"


def send_then_report(request: ModelRequest) -> Any:
    """One transfer by `send`, then an answer quoting what the tool said."""
    if request.call_index == 0:
        return {"tool_calls": [{"id": "c1", "tool": "send", "args": {"to": "acme", "amount": 5}}]}
    said = [str(m.get("content")) for m in request.messages if m.get("role") == "tool"]
    return "tool said: " + " | ".join(said)


async def cancelled_after(
    runtime: SqliteRuntime, agent: Any, *, approve: bool, hang: str, tool: str | None = None
) -> str:
    """A run of `agent(hooks)` cancelled once its `hang` hook is under way ("after_tool": the
    call ran; "before_tool": it was allowed, and not begun) for a call (of `tool`, when
    named), asked about and approved by alice first when `approve`: its id."""
    reached = asyncio.Event()
    hooks = Hooks(timeout=None)

    async def hold(call: Any, *_: Any) -> None:
        if tool is not None and call["tool"] != tool:
            return
        reached.set()
        await asyncio.Event().wait()  # under way when the run is cancelled

    hooks.register(hang, hold)
    if approve:
        started = await agent(None).run("pay acme")
        assert started.status == "awaiting_approval", started.reason
        answer = Approval("c1", True, approver="alice")
        going = asyncio.create_task(agent(hooks).resume(started.run_id, approve=answer))
    else:
        going = asyncio.create_task(agent(hooks).run("pay acme"))
    await asyncio.wait_for(reached.wait(), WAIT)
    going.cancel()
    with pytest.raises(asyncio.CancelledError):
        await going
    (record,) = await runtime.runs()
    assert record.status == "cancelled"
    return record.run_id


@pytest.mark.parametrize("change", ["hook_denies", "hook_fails"])
async def test_a_call_the_rules_allowed_that_ran_is_replayed_without_asking_the_hooks(
    tmp_path: Path, change: str
) -> None:
    """No approval involved: the rules allow `send`; it runs and the run is cancelled before
    its tools node is journaled. Resumed with a `before_tool` hook that now denies (and counts
    what it is asked) or fails: the call is replayed, and the hook is never asked about it (a
    hook that counts calls against a limit would count the transfer twice)."""
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))

    def agent(hooks: Hooks | None = None) -> Agent:
        return Agent(
            "x",
            model=ScriptedModel(send_then_report),
            tools=[send],
            runtime=runtime,
            **({} if hooks is None else {"hooks": hooks}),
        )

    asked: list[Any] = []
    hooks = Hooks()

    @hooks.before_tool
    def limit(call: Any) -> Decision | None:
        asked.append(call)
        if change == "hook_fails":
            raise ConnectionError("limits service down")
        return Decision("deny", "daily-limit", "one transfer a day")

    run_id = await cancelled_after(runtime, agent, approve=False, hang="after_tool")
    assert PAID == [{"to": "acme", "amount": 5}]
    done = await agent(hooks).resume(run_id)
    assert done.status == "completed", done.reason
    assert done.output == "tool said: sent 5 to acme", done.output
    assert PAID == [{"to": "acme", "amount": 5}] and asked == []
    await runtime.close()


async def test_a_replayed_call_reports_no_new_decision(tmp_path: Path) -> None:
    """On replay the call is not decided: no `permission_decision` event or audit entry for
    it (as a replayed model call reports no new turn), while its `tool_call` and
    `tool_result` events go out as for any replayed call, the audit entry marked `replayed`."""
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    path = tmp_path / "audit.jsonl"

    def audit() -> FileAuditLog:
        return FileAuditLog(path, unsigned=True)

    run_id = await cancelled_after_the_approved_payment(runtime, audit)
    seen: list[str] = []
    hooks = Hooks()

    @hooks.on_event
    def note(event: Any) -> None:
        seen.append(event.kind)

    later = Agent(
        "x",
        model=ScriptedModel(pay_then_report),
        tools=[pay],
        runtime=runtime,
        hooks=hooks,
        audit_log=audit(),
    )
    done = await later.resume(run_id)
    assert done.status == "completed" and len(PAID) == 1
    assert "tool_call" in seen and "tool_result" in seen
    assert "permission_decision" not in seen, seen
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    verdicts = [e["payload"]["verdict"] for e in entries if e["action"] == "permission_decision"]
    assert verdicts == ["ask", "allow"]  # asked, then approved: once each, not again
    await runtime.close()


async def test_a_call_whose_tool_is_gone_on_resume_is_replayed(tmp_path: Path) -> None:
    """A deploy removed `pay` while the run was cut off after the payment: the journal's
    result is what the model reads, not "unknown tool" for a payment that went through."""
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    run_id = await cancelled_after_the_approved_payment(runtime)
    later = Agent("x", model=ScriptedModel(pay_then_report), tools=[send], runtime=runtime)
    done = await later.resume(run_id)
    assert done.status == "completed", done.reason
    assert done.output == "tool said: paid 5 to acme", done.output
    assert PAID == [{"to": "acme", "amount": 5}]
    await runtime.close()


HANGING: list[asyncio.Event] = []  # set: `pay_and_hang` hangs, once it has paid


@tool(destructive=True, name="pay")
async def pay_and_hang(to: str, amount: int) -> str:
    """Pay someone, then (the first time) hang before answering."""
    PAID.append({"to": to, "amount": amount})
    if HANGING:
        HANGING.pop().set()
        await asyncio.Event().wait()
    return f"paid {amount} to {to}"


async def test_an_approved_call_cut_off_in_the_tool_runs_again_its_approval_replayed(
    tmp_path: Path,
) -> None:
    """The existing rule for an effect begun and not finished stays: cut off inside the tool,
    the call is `unknown_after_crash` on resume and runs again with its key, on the journaled
    answer (not asked again). That answer was used by the first attempt: its second `approval`
    entry is marked `replayed`, so the log holds one approval by alice."""
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    path = tmp_path / "audit.jsonl"

    def agent() -> Agent:
        return Agent(
            "x",
            model=ScriptedModel(pay_then_report),
            tools=[pay_and_hang],
            runtime=runtime,
            audit_log=FileAuditLog(path, unsigned=True),
        )

    first = await agent().run("pay acme")
    assert first.status == "awaiting_approval"
    paid = asyncio.Event()
    HANGING.append(paid)
    going = asyncio.create_task(
        agent().resume(first.run_id, approve=Approval("c1", True, approver="alice"))
    )
    await asyncio.wait_for(paid.wait(), WAIT)
    going.cancel()
    with pytest.raises(asyncio.CancelledError):
        await going
    done = await agent().resume(first.run_id)
    assert done.status == "completed", done.reason
    assert len(PAID) == 2  # run again: its first attempt may have acted (unknown after crash)
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    approvals = [e["payload"] for e in entries if e["action"] == "approval"]
    assert [(a["approver"], a.get("replayed", False)) for a in approvals] == [
        ("alice", False),
        ("alice", True),
    ]
    assert any(e["action"] == "effect_unknown_after_crash" for e in entries)
    await runtime.close()


async def test_an_approved_call_never_begun_is_not_asked_again(tmp_path: Path) -> None:
    """alice's answer was used, but the run was cut off in a `before_tool` hook, before the
    call began. Resumed, the call runs once on the journaled answer, not asked again; its
    `approval` entry is not a replay (the call never went on, on the first one)."""
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    path = tmp_path / "audit.jsonl"

    def agent(hooks: Hooks | None = None) -> Agent:
        return Agent(
            "x",
            model=ScriptedModel(pay_then_report),
            tools=[pay],
            runtime=runtime,
            audit_log=FileAuditLog(path, unsigned=True),
            **({} if hooks is None else {"hooks": hooks}),
        )

    run_id = await cancelled_after(runtime, agent, approve=True, hang="before_tool")
    assert PAID == []
    done = await agent().resume(run_id)
    assert done.status == "completed", done.reason
    assert done.output == "tool said: paid 5 to acme" and len(PAID) == 1
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    approvals = [e["payload"] for e in entries if e["action"] == "approval"]
    assert approvals and not any(a.get("replayed") for a in approvals), approvals
    assert not [e for e in entries if e["action"] == "approval_requested"][1:]  # asked once
    await runtime.close()


ORDER = "order 4711 for acme corp, ship to the dock on pier nine"


@tool(egress=True)
def send_email(to: str, body: str) -> str:
    """Send an email (egress: its arguments leave the process)."""
    PAID.append({"to": to, "body": body})
    return f"mailed {to}"


@tool
def lookup(query: str) -> str:
    """Look something up (its result is untrusted text)."""
    return f"found: {ORDER}"


def mail_then_look_up(request: ModelRequest) -> Any:
    """One turn: an email quoting the user's order, then a lookup whose result quotes it too."""
    if request.call_index == 0:
        return {
            "tool_calls": [
                {"id": "m1", "tool": "send_email", "args": {"to": "ops", "body": ORDER}},
                {"id": "l1", "tool": "lookup", "args": {"query": "order 4711"}},
            ]
        }
    said = [str(m.get("content")) for m in request.messages if m.get("role") == "tool"]
    return "tool said: " + " | ".join(said)


async def test_an_egress_call_that_ran_is_not_held_for_taint_a_later_result_brought(
    tmp_path: Path,
) -> None:
    """An email sent from the user's own words (no untrusted text yet), then a lookup whose
    result quotes the same words; cut off before the tools node is journaled. On resume the
    run's untrusted text holds that later result, so the email reads as tainted: deciding it
    again would stop the run to ask about an email that was sent. It is replayed."""
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    graph = graph_from_data(
        {
            **load_graph("react").to_data(),
            "nodes": {
                "model": {"kind": "model", "reads": ["messages"], "writes": ["messages", "usage"]},
                "tools": {"kind": "tools", "concurrency": 1, "reads": ["messages"]},
            },
        }
    )

    def agent(hooks: Hooks | None = None) -> Agent:
        return Agent(
            "x",
            model=ScriptedModel(mail_then_look_up),
            tools=[send_email, lookup],
            runtime=runtime,
            architecture=graph,
            **({} if hooks is None else {"hooks": hooks}),
        )

    run_id = await cancelled_after(runtime, agent, approve=False, hang="after_tool", tool="lookup")
    assert len(PAID) == 1  # the email went out, untainted then
    done = await agent().resume(run_id)
    assert done.status == "completed", done.reason
    assert done.output == f"tool said: mailed ops | found: {ORDER}", done.output
    assert len(PAID) == 1
    await runtime.close()
