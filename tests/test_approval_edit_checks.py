"""An approval's edited arguments are checked by the host that will run the call, before the
approval is used: an MCP server's tool (its inputSchema, on the MCP host's bounded checker),
as a local tool's. An approval is used once: an edit the tool would refuse, taken, would
leave the call failed and the approval gone. An in-run approval handler's edit the tool
would refuse denies the call, saying the handler's edit does not fit (without its values:
the reason is audited), instead of failing it as the model's mistake. The steered server
(tests/mcp_steered_server.py) records every call it receives outside the journal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent, tool
from loomgraph.agent.resume_errors import EditedArgsInvalid
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
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

    agent = Agent(
        "x",
        model=ScriptedModel([{"tool_calls": [{"tool": "pay", "args": {"amount": 5}}]}, "done"]),
        tools=[pay],
        permissions=StandardPermissions(ask=["pay"]),
        approval_handler=handler,
    )
    async with agent:
        done = await agent.run("pay")
        history = await agent.history(done.run_id)
    assert paid == []
    [result] = tool_results(history)
    assert result["is_error"] and result["content"].startswith("permission denied"), result
    assert "approval handler" in result["content"] and "do not fit" in result["content"]
    assert "lots" not in result["content"]
