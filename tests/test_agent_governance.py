"""Budgets, permissions, approvals and hooks through a real Agent run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent, tool
from loomgraph.agent.checkpoints import ResumeError
from loomgraph.governance import BudgetConfig, Caps, StandardBudget, StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.observability import FileAuditLog
from loomgraph.protocols import ModelRequest
from loomgraph.runtime import SqliteRuntime

ledger: list[str] = []


@tool(destructive=True)
def delete(path: str) -> str:
    """Delete a file."""
    ledger.append(f"delete {path}")
    return f"deleted {path}"


def read(path: str) -> str:
    """Read a file."""
    ledger.append(f"read {path}")
    return f"contents of {path}"


def calls(*pairs: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {"tool_calls": [{"tool": t, "args": a} for t, a in pairs]}


async def test_a_model_call_over_the_cap_is_never_made() -> None:
    asked: list[int] = []

    def script(request: ModelRequest) -> object:
        asked.append(request.call_index)
        return calls(("read", {"path": "/data/a"}))

    budget = StandardBudget(BudgetConfig(per_user=Caps(model_calls=2)))
    agent = Agent("x", model=ScriptedModel(script), tools=[read], budget=budget)
    events = [e async for e in agent.stream("go", user_id="bob")]
    result = events[-1].payload["result"]
    assert result["status"] == "budget_exhausted"
    assert "user:bob:model_calls" in result["reason"]
    assert asked == [0, 1]  # the third call would have overshot: it was never made
    assert [e.payload["cap"] for e in events if e.kind == "budget_exceeded"] == [
        "user:bob:model_calls"
    ]
    assert any(e.kind == "budget_warning" for e in events)
    totals = await budget.totals("user:bob")
    assert totals.spent["model_calls"] == 2 and not totals.reserved.get("model_calls")


async def test_a_denied_path_is_never_read_and_the_rule_is_named(tmp_path: Path) -> None:
    ledger.clear()
    audit = FileAuditLog(tmp_path / "audit.jsonl", unsigned=True)
    permissions = StandardPermissions(allow=["read(path=/data/**)"], mode="strict")
    script = ScriptedModel(
        [
            calls(("read", {"path": "/data/../etc/passwd"}), ("read", {"path": "/data/notes"})),
            "done",
        ]
    )
    agent = Agent("x", model=script, tools=[read], permissions=permissions, audit_log=audit)
    events = [e async for e in agent.stream("go")]
    decisions = [e.payload for e in events if e.kind == "permission_decision"]
    assert [(d["verdict"], d["rule"]) for d in decisions] == [
        ("deny", "mode:strict:deny"),
        ("allow", "allow:read(path=/data/**)"),
    ]
    assert ledger == ["read /data/notes"]
    results = [e.payload["result"] for e in events if e.kind == "tool_result"]
    assert results[0]["error_type"] == "permission_denied"
    entries = list(audit.entries())
    allowed = {
        e["payload"]["call_id"]
        for e in entries
        if e["action"] == "permission_decision" and e["payload"]["verdict"] == "allow"
    }
    executed = [e["payload"]["call_id"] for e in entries if e["action"] == "tool_request"]
    assert executed and set(executed) <= allowed
    assert audit.verify().ok


async def test_ask_is_a_durable_interrupt_answered_once(tmp_path: Path) -> None:
    ledger.clear()
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    script = ScriptedModel([calls(("delete", {"path": "/tmp/x"})), "gone"])
    agent = Agent(
        "x", model=script, tools=[delete], runtime=runtime, permissions=StandardPermissions()
    )  # default mode: destructive tools ask
    first = await agent.run("clean up")
    assert first.status == "awaiting_approval" and ledger == []
    assert first.pending is not None and first.pending.call["tool"] == "delete"
    with pytest.raises(ResumeError, match="True, False"):
        await agent.resume(first.run_id, approve="yes please")
    done = await agent.resume(first.run_id, approve=True)
    assert done.status == "completed" and done.output == "gone"
    assert ledger == ["delete /tmp/x"]
    with pytest.raises(ResumeError, match="used once"):
        await agent.resume(first.run_id, approve=True)
    assert ledger == ["delete /tmp/x"]
    await runtime.close()


async def test_edited_arguments_are_checked_again_and_a_refusal_denies() -> None:
    ledger.clear()
    permissions = StandardPermissions(deny=["delete(path=/etc/**)"])
    script = ScriptedModel([calls(("delete", {"path": "/tmp/x"})), "ok", "ok"])
    agent = Agent("x", model=script, tools=[delete], permissions=permissions)
    run = await agent.run("clean")
    edited = await agent.resume(run.run_id, approve={"args": {"path": "/etc/passwd"}})
    assert edited.status == "completed" and ledger == []
    again = await agent.run("clean")
    refused = await agent.resume(again.run_id, approve=False)
    assert refused.status == "completed" and ledger == []
    history = await agent.history(again.run_id)
    tool_message = history[2].patch["messages"][0]
    assert tool_message["is_error"] and "denied" in tool_message["content"]


async def test_an_approval_handler_decides_in_process() -> None:
    ledger.clear()
    seen: list[str] = []

    def handler(call: dict[str, Any], decision: Any) -> bool:
        seen.append(f"{call['tool']}:{decision.rule}")
        return call["args"]["path"].startswith("/tmp/")

    script = ScriptedModel(
        [calls(("delete", {"path": "/tmp/a"}), ("delete", {"path": "/home/b"})), "done"]
    )
    agent = Agent(
        "x",
        model=script,
        tools=[delete],
        permissions=StandardPermissions(),
        approval_handler=handler,
    )
    result = await agent.run("clean")
    assert result.status == "completed" and ledger == ["delete /tmp/a"]
    assert seen == ["delete:mode:default:destructive"] * 2


async def test_hooks_registered_on_the_agent_can_deny_but_not_approve() -> None:
    ledger.clear()
    agent = Agent(
        "x",
        model=ScriptedModel([calls(("read", {"path": "/a"}), ("delete", {"path": "/b"})), "done"]),
        tools=[read, delete],
        permissions=StandardPermissions(deny=["delete"]),
    )

    @agent.hooks.before_tool
    def no_reading(call: dict[str, Any]) -> Any:
        if call["tool"] == "read":
            return "reading is off today"
        return "allow"  # an allow from a hook is ignored: delete stays denied

    result = await agent.run("go")
    assert result.status == "completed" and ledger == []


async def test_the_wall_clock_deadline_is_kept_with_the_run(tmp_path: Path) -> None:
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    budget = StandardBudget(BudgetConfig(wall_clock_s=600))
    agent = Agent("x", model=ScriptedModel(["hi"]), runtime=runtime, budget=budget)
    result = await agent.run("go")
    record = await runtime.load_run(result.run_id)
    assert record is not None and record.deadline is not None
    assert abs(record.deadline - (record.created_at + 600)) < 5
    await agent.aclose()  # the journal, and the ledger that moved into its file


async def test_an_unknown_tool_is_a_journaled_deny(tmp_path: Path) -> None:
    audit = FileAuditLog(tmp_path / "audit.jsonl", unsigned=True)
    agent = Agent(
        "x",
        model=ScriptedModel([calls(("rm_rf", {})), "ok"]),
        tools=[read],
        permissions=StandardPermissions(mode="bypass"),
        audit_log=audit,
    )
    events = [e async for e in agent.stream("go")]
    [decision] = [e.payload for e in events if e.kind == "permission_decision"]
    assert (decision["verdict"], decision["rule"]) == ("deny", "unknown_tool")
    assert any(
        e["action"] == "permission_decision" and e["payload"]["rule"] == "unknown_tool"
        for e in audit.entries()
    )
