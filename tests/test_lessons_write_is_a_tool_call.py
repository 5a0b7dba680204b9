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
from loomgraph.memory.in_memory import InMemoryMemory
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


class LosingMemory(InMemoryMemory):
    """Its next `set_block` fails once, before keeping the block (`when="before"`) or after
    (the answer lost on the way back), as a crash there leaves the write begun, unfinished."""

    when = ""

    async def set_block(self, user_id: str | None, name: str, text: str) -> None:
        when, self.when = self.when, ""
        if when == "before":
            raise ConnectionError("set_block was cut off")
        await super().set_block(user_id, name, text)
        if when == "after":
            raise ConnectionError("the answer of set_block was lost")


def asking(tmp_path: Path, memory: LosingMemory) -> Agent:
    return Agent(
        "x",
        model=ScriptedModel(script()),
        tools=[read_inbox],
        memory=memory,
        architecture="reflexion",
        permissions=StandardPermissions(ask=["update_block"]),
        runtime=f"sqlite:{tmp_path / 'j.db'}",
    )


async def lessons_writes(rx: Agent, run_id: str) -> list[tuple[str, str]]:
    effects = await rx.deps.runtime.effects(run_id)
    writes = [e for e in effects if e.kind == "tool" and ":memory:lessons" in e.key]
    return [(e.key.rsplit(":", 1)[-1], str(e.status)) for e in writes]


async def test_a_write_asked_again_then_cut_off_is_settled_by_the_resume(tmp_path: Path) -> None:
    """Asked again under its second key (the block changed while it waited), approved, and
    cut off after memory kept it: the resume writes that approved text again under that key
    and the write ends `done` (it was left begun for ever: only the first key was looked at)."""
    memory = LosingMemory()
    rx = asking(tmp_path, memory)
    first = await rx.run("Summarise my inbox", user_id="alice")
    other = "- Lesson from another run."
    await memory.set_block("alice", "lessons", other)
    again = await rx.resume(first.run_id, approve=True)
    assert again.status == "awaiting_approval", again.reason
    memory.when = "after"
    failed = await rx.resume(first.run_id, approve=True)
    assert failed.status == "failed", failed.reason
    done = await rx.resume(first.run_id)
    assert done.status == "completed", done.reason
    assert await blocks(rx) == {"lessons": f"{other}\n- {LESSON}"}
    assert await lessons_writes(rx, first.run_id) == [("lessons~2", "done")]
    await rx.aclose()


async def test_an_approved_write_cut_off_is_made_again_as_approved(tmp_path: Path) -> None:
    """Approved and cut off before memory kept it; the block changes before the resume: the
    write begun is made again as it was approved (at least once, as any call a crash cut
    off), not denied as another call (it was: the lesson lost, the write left begun)."""
    memory = LosingMemory()
    rx = asking(tmp_path, memory)
    first = await rx.run("Summarise my inbox", user_id="alice")
    memory.when = "before"
    failed = await rx.resume(first.run_id, approve=True)
    assert failed.status == "failed", failed.reason
    await memory.set_block("alice", "lessons", "- Lesson from another run.")
    done = await rx.resume(first.run_id)
    assert done.status == "completed", done.reason
    assert await blocks(rx) == {"lessons": f"- {LESSON}"}  # the text approved
    assert await lessons_writes(rx, first.run_id) == [("lessons", "done")]
    await rx.aclose()
