"""An approval's edited arguments are checked by the host that will run the call, before the
approval is used: an MCP server's tool (its inputSchema, on the MCP host's bounded checker),
as a local tool's. An approval is used once: an edit the tool would refuse, taken, would
leave the call failed and the approval gone. An in-run approval handler's edit the tool
would refuse denies the call, saying the handler's edit does not fit (without its values:
the reason is audited), instead of failing it as the model's mistake. The steered server
(tests/mcp_steered_server.py) records every call it receives outside the journal."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent, tool
from loomgraph.agent.resume_errors import EditedArgsInvalid
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.observability import FileAuditLog
from mcp_steering import PAY, TRANSFER, control, received, server, tool_results

# `to` must be a short lowercase name: a pattern only the server's schema knows.
TRANSFER_NAMED = {
    **TRANSFER,
    "inputSchema": {
        **TRANSFER["inputSchema"],
        "properties": {
            "to": {"type": "string", "pattern": "^[a-z]{1,12}$"},
            "amount": {"type": "integer"},
        },
    },
}


def banking(state: Path, journal: str, **options: Any) -> Agent:
    return Agent(
        "x",
        model=ScriptedModel([PAY, "done"]),
        tools=[server(state, "bank")],
        permissions=StandardPermissions(ask=["transfer"]),
        runtime=journal,
        **options,
    )


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ({"to": "alice", "amount": "five"}, "amount"),  # the wrong type
        ({"to": "Alice Smith!", "amount": 5}, "to"),  # the server's own pattern
        ({"to": "alice", "amount": 5, "memo": "x"}, "memo"),  # closed schema
    ],
)
async def test_an_edit_an_mcp_tool_refuses_is_refused_before_the_approval_is_used(
    tmp_path: Path, edit: dict[str, Any], named: str
) -> None:
    bank = tmp_path / "bank"
    control(bank, [TRANSFER_NAMED])
    journal = f"sqlite:{tmp_path / 'journal.db'}"
    async with banking(bank, journal) as first:
        waiting = await first.run("pay alice")
    assert waiting.status == "awaiting_approval"
    async with banking(bank, journal) as second:
        with pytest.raises(EditedArgsInvalid, match=named) as refused:
            await second.resume(waiting.run_id, approve={"args": edit})
        assert "transfer" in str(refused.value) and "still waits" in str(refused.value)
        [still] = [r for r in await second.runs() if r.run_id == waiting.run_id]
        assert still.status == "awaiting_approval"
        # The approval was not used: a correct one goes through, once.
        fixed = {"to": "bob", "amount": 4}
        done = await second.resume(waiting.run_id, approve={"args": fixed})
    assert done.status == "completed", done.reason
    assert [call["args"] for call in received(bank)] == [fixed]


async def test_an_edit_an_mcp_tool_takes_is_used(tmp_path: Path) -> None:
    bank = tmp_path / "bank"
    control(bank, [TRANSFER_NAMED])
    journal = f"sqlite:{tmp_path / 'journal.db'}"
    async with banking(bank, journal) as first:
        waiting = await first.run("pay alice")
    async with banking(bank, journal) as second:
        done = await second.resume(waiting.run_id, approve={"args": {"to": "carol", "amount": 2}})
    assert done.status == "completed", done.reason
    assert [call["args"] for call in received(bank)] == [{"to": "carol", "amount": 2}]


async def test_a_handlers_edit_an_mcp_tool_refuses_denies_the_call_naming_the_edit(
    tmp_path: Path,
) -> None:
    bank = tmp_path / "bank"
    control(bank, [TRANSFER_NAMED])
    journal = f"sqlite:{tmp_path / 'journal.db'}"

    def handler(call: Any, decision: Any) -> Any:
        return {"args": {"to": "Mallory Inc.", "amount": 5}}

    async with banking(bank, journal, approval_handler=handler) as agent:
        done = await agent.run("pay alice")
        history = await agent.history(done.run_id)
    assert done.status == "completed", done.reason
    assert received(bank) == []
    [result] = tool_results(history)
    assert result["is_error"] and result["content"].startswith("permission denied")
    assert "approval handler" in result["content"] and "do not fit" in result["content"]
    assert "Mallory" not in result["content"]  # reasons are audited: no argument values


async def test_a_handlers_edit_a_local_tool_refuses_denies_the_call(tmp_path: Path) -> None:
    paid: list[int] = []

    @tool
    async def pay(amount: int) -> str:
        """Pay an amount."""
        paid.append(amount)
        return "paid"

    def handler(call: Any, decision: Any) -> Any:
        return {"args": {"amount": "lots"}}

    audit = FileAuditLog(tmp_path / "audit.jsonl", unsigned=True)
    agent = Agent(
        "x",
        model=ScriptedModel([{"tool_calls": [{"tool": "pay", "args": {"amount": 5}}]}, "done"]),
        tools=[pay],
        permissions=StandardPermissions(ask=["pay"]),
        approval_handler=handler,
        audit_log=audit,
    )
    async with agent:
        events = [e async for e in agent.stream("pay")]
    assert paid == []
    [result] = [e.payload["result"] for e in events if e.kind == "tool_result"]
    assert result["is_error"] and result["content"].startswith("permission denied"), result
    assert result["error_type"] == "permission_denied"
    assert "approval handler" in result["content"] and "do not fit" in result["content"]
    assert "lots" not in result["content"]
    # The audit log says who refused and why: the handler's edit, not the model's call.
    [answered] = [e for e in audit.entries() if e["action"] == "approval"]
    assert answered["payload"]["approver"] == "handler" and not answered["payload"]["allow"]
    assert "do not fit tool 'pay'" in answered["payload"]["reason"]
    assert "lots" not in json.dumps(answered["payload"])


# ------------------------------------------------ a hostile pattern: checked on RE2, bounded

EVIL = "^(a+)+$"  # Python's `re` backtracks 2**40 ways on 40 a's and a "!"
SLOW_TEXT = "a" * 40 + "!"
BOUND = 120.0  # a stalled check fails the test at this limit instead of hanging it


def scenario_hostile_pattern(where: Path) -> dict[str, Any]:
    """A resume edit and an in-run handler's edit that stall `re` on an MCP tool's pattern."""
    bank = where / "bank"
    hostile = {**TRANSFER_NAMED, "inputSchema": {**TRANSFER_NAMED["inputSchema"]}}
    hostile["inputSchema"]["properties"] = {
        "to": {"type": "string", "pattern": EVIL},
        "amount": {"type": "integer"},
    }
    control(bank, [hostile])
    journal = f"sqlite:{where / 'journal.db'}"
    slow = {"to": SLOW_TEXT, "amount": 5}

    async def go() -> dict[str, Any]:
        async with banking(bank, journal) as first:
            waiting = await first.run("pay alice")
        async with banking(bank, journal) as second:
            try:
                await second.resume(waiting.run_id, approve={"args": slow})
                refused = ""
            except EditedArgsInvalid as exc:
                refused = str(exc)
            done = await second.resume(waiting.run_id, approve={"args": {"to": "aa", "amount": 1}})
        async with banking(bank, journal, approval_handler=lambda c, d: {"args": slow}) as third:
            handled = await third.run("pay alice")
            results = tool_results(await third.history(handled.run_id))
        return {
            "refused": refused,
            "status": done.status,
            "handled": [r["content"] for r in results],
            "received": [c["args"] for c in received(bank)],
        }

    return asyncio.run(go())


def test_a_hostile_pattern_in_an_edit_is_refused_within_a_bound(tmp_path: Path) -> None:
    # In a fresh Python, bounded: a check on a backtracking engine would hold the GIL (and
    # this test) for minutes; the MCP host's checker (RE2) answers in one pass.
    done = subprocess.run(
        [sys.executable, __file__, "scenario_hostile_pattern", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert f"{SLOW_TEXT!r} does not match {EVIL!r}" in out["refused"], out
    assert "still waits" in out["refused"]
    assert out["status"] == "completed"  # the approval was not used: a fitting one was
    [denied] = out["handled"]
    assert denied.startswith("permission denied") and "approval handler" in denied
    assert out["received"] == [{"to": "aa", "amount": 1}]


if __name__ == "__main__":  # a scenario run in a fresh Python by a test above
    print(json.dumps(globals()[sys.argv[1]](Path(sys.argv[2]))))
