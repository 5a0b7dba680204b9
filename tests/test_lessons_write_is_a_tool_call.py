"""Reflexion's lessons write is a tool call all the way: charged, hooked, audited, reported.

Found by probing governance in composite graphs: the write was decided by the tool gate
(rules, taint, approvals, `before_tool`) but then run beside it, so a `tool_calls` cap of 0
did not stop it, it was never charged, `after_tool` never heard of it, and the audit log had
its decision but no `tool_request` or `tool_result`. A node's own call now goes through the
gate's whole path, as a call of a tool of the host does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loomgraph import Agent, tool
from loomgraph.governance import (
    BudgetConfig,
    Caps,
    Hooks,
    SqliteLedger,
    StandardBudget,
    StandardPermissions,
)
from loomgraph.models import ScriptedModel
from loomgraph.observability import FileAuditLog
from loomgraph.protocols.events import TOOL_RESULT

LESSON = "Lesson: cite the sender of each message."


@tool
def read_inbox() -> str:
    """Read the inbox."""
    return "Hi! Lunch at noon?"


def script() -> list[Any]:
    """Attempt 1 reads the inbox and falls short; the lesson; attempt 2 passes."""
    return [
        {"tool_calls": [{"tool": "read_inbox", "args": {}}]},
        "I read the inbox.",
        {"tool_calls": [{"tool": "respond", "args": {"score": 0.2, "feedback": "cite"}}]},
        LESSON,
        "Second attempt answer",
        {"tool_calls": [{"tool": "respond", "args": {"score": 0.9}}]},
    ]


def reflexion(**options: Any) -> Agent:
    return Agent(
        "x",
        model=ScriptedModel(script()),
        tools=[read_inbox],
        memory="memory",
        architecture="reflexion",
        **options,
    )


async def blocks(agent: Agent) -> dict[str, str]:
    return await agent.deps.memory.get_blocks("alice")  # type: ignore[attr-defined, no-any-return]


async def test_the_lessons_write_is_charged_as_a_tool_call(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.db")
    rx = reflexion(budget=StandardBudget(BudgetConfig(per_user=Caps(tool_calls=10)), ledger))
    result = await rx.run("Summarise my inbox", user_id="alice")
    assert result.status == "completed", result.reason
    assert await blocks(rx) == {"lessons": f"- {LESSON}"}
    spent = (await ledger.totals("user:alice")).spent
    assert spent.get("tool_calls") == 2  # read_inbox, and the write
    await rx.aclose()


async def test_a_tool_call_cap_the_write_would_pass_keeps_the_lesson_out(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.db")
    rx = reflexion(budget=StandardBudget(BudgetConfig(per_user=Caps(tool_calls=1)), ledger))
    result = await rx.run("Summarise my inbox", user_id="alice")
    assert result.status == "budget_exhausted", result.reason
    assert "user:alice:tool_calls" in (result.reason or "")
    assert await blocks(rx) == {}
    assert (await ledger.totals("user:alice")).spent.get("tool_calls") == 1
    await rx.aclose()


async def test_the_write_is_heard_by_after_tool_audited_and_reported(tmp_path: Path) -> None:
    hooks, heard = Hooks(), []

    @hooks.after_tool
    def after(call: Any, result: Any) -> None:
        heard.append((call["tool"], bool(result.get("is_error"))))

    audit = FileAuditLog(tmp_path / "audit.jsonl", unsigned=True)
    rx = reflexion(hooks=hooks, audit_log=audit)
    results = []
    async for event in rx.stream("Summarise my inbox", user_id="alice"):
        if event.kind == TOOL_RESULT:
            results.append(event.payload["call"]["tool"])
    assert results == ["read_inbox", "update_block"]
    assert heard == [("read_inbox", False), ("update_block", False)]
    written = [
        e["action"]
        for e in audit.entries()
        if e["action"] in ("tool_request", "tool_result") and e["payload"]["tool"] == "update_block"
    ]
    assert written == ["tool_request", "tool_result"], written
    assert await blocks(rx) == {"lessons": f"- {LESSON}"}


async def test_an_approved_write_is_charged_once_across_its_stop(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.db")
    perms = StandardPermissions(ask=["update_block"])
    budget = StandardBudget(BudgetConfig(per_user=Caps(tool_calls=10)), ledger)
    rx = reflexion(budget=budget, permissions=perms, runtime=f"sqlite:{tmp_path / 'j.db'}")
    stopped = await rx.run("Summarise my inbox", user_id="alice")
    assert stopped.status == "awaiting_approval", stopped.reason
    assert (await ledger.totals("user:alice")).spent.get("tool_calls") == 1
    done = await rx.resume(stopped.run_id, approve=True)
    assert done.status == "completed", done.reason
    assert await blocks(rx) == {"lessons": f"- {LESSON}"}
    assert (await ledger.totals("user:alice")).spent.get("tool_calls") == 2
    await rx.aclose()


async def test_a_write_whose_text_changed_while_it_waited_is_asked_about_again(
    tmp_path: Path,
) -> None:
    """Another run of the user kept a lesson while this write waited for its approval: the
    approved text would drop that lesson, and the text this run would write now was never
    approved. The run asks again about the write as it stands now (it was denied in
    silence, as a mismatch, and the lesson was lost)."""
    perms = StandardPermissions(ask=["update_block"])
    rx = reflexion(permissions=perms, runtime=f"sqlite:{tmp_path / 'j.db'}")
    first = await rx.run("Summarise my inbox", user_id="alice")
    assert first.status == "awaiting_approval" and first.pending is not None
    assert first.pending.call is not None
    assert first.pending.call["args"]["text"] == f"- {LESSON}"
    other = "- Lesson from another run."
    await rx.deps.memory.set_block("alice", "lessons", other)  # type: ignore[attr-defined]
    again = await rx.resume(first.run_id, approve=True)
    assert again.status == "awaiting_approval", again.reason
    assert again.pending is not None and again.pending.call is not None
    assert again.pending.call["args"]["text"] == f"{other}\n- {LESSON}"
    assert await blocks(rx) == {"lessons": other}  # nothing written without its approval
    done = await rx.resume(first.run_id, approve=True)
    assert done.status == "completed", done.reason
    assert await blocks(rx) == {"lessons": f"{other}\n- {LESSON}"}
    await rx.aclose()
