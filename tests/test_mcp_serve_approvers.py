"""`loomgraph mcp-serve`: an approver answers every user's calls of the agent, as over HTTP.
dave (no role) runs a payment that waits for approval; alice (`--approver`) finds it with the
`approvals` tool and approves it with `resume`; she is told the run's id, status and what it
waits for next, not its events or answer. Before, `resume` found only the caller's own runs,
so a plain user's call could be answered by no MCP client. Two real stdio servers on one
SQLite journal, driven by the official SDK's client; the agent is tests/test_mcp_serve_keys.py's
(pay, then wire, both asked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_mcp_serve_keys import client, ledger, text


async def test_an_approver_lists_and_answers_another_users_call(tmp_path: Path) -> None:
    async with client(tmp_path, "dave") as dave:
        started: Any = (await dave.call_tool("run", {"prompt": "pay bob"})).structured_content
        run_id = started["run_id"]
        assert started["status"] == "awaiting_approval"
        refused = await dave.call_tool("approvals", {})
        assert refused.is_error and "no approver role" in text(refused)
    async with client(tmp_path, "alice", "--approver") as alice:
        tools = {t.name for t in (await alice.list_tools()).tools}
        assert tools == {"run", "resume", "approvals"}
        listed: Any = (await alice.call_tool("approvals", {})).structured_content
        [waiting] = listed["runs"]
        assert waiting["run_id"] == run_id and waiting["user_id"] == "dave"
        assert waiting["input"] == "pay bob" and listed["cursor"] is None
        asked = waiting["awaiting_approval"]
        assert asked["tool"] == "pay" and asked["key"] == started["awaiting_approval"]["key"]
        answer = {"run_id": run_id, "approve": True, "key": asked["key"]}
        told: Any = (await alice.call_tool("resume", answer)).structured_content
        assert ledger(tmp_path) == ["pay bob 1"]
        # What the list would show, nothing more: no answer, no events of dave's run.
        assert set(told) == {"run_id", "status", "awaiting_approval"}
        assert told["status"] == "awaiting_approval"
        assert told["awaiting_approval"]["tool"] == "wire"
        # Answering is all the role gives: dave's run is still not alice's to resume.
        crash_resume = await alice.call_tool("resume", {"run_id": run_id})
        assert crash_resume.is_error and text(crash_resume).endswith(f"no run {run_id!r}")
        denied = {"run_id": run_id, "approve": False, "key": told["awaiting_approval"]["key"]}
        done: Any = (await alice.call_tool("resume", denied)).structured_content
        assert done == {"run_id": run_id, "status": "completed"}
        assert (await alice.call_tool("approvals", {})).structured_content == {
            "runs": [],
            "cursor": None,
        }
    assert ledger(tmp_path) == ["pay bob 1"]


async def test_the_list_pages_and_a_plain_user_reaches_no_other_run(tmp_path: Path) -> None:
    async with client(tmp_path, "dave") as dave:
        first: Any = (await dave.call_tool("run", {"prompt": "pay bob"})).structured_content
    async with client(tmp_path, "erin", "--approver") as erin:
        second: Any = (await erin.call_tool("run", {"prompt": "pay bob"})).structured_content
        page: Any = (await erin.call_tool("approvals", {"limit": 1})).structured_content
        assert [r["run_id"] for r in page["runs"]] == [second["run_id"]] and page["cursor"]
        rest: Any = (
            await erin.call_tool("approvals", {"limit": 1, "cursor": page["cursor"]})
        ).structured_content
        assert [r["run_id"] for r in rest["runs"]] == [first["run_id"]]
        too_many = await erin.call_tool("approvals", {"limit": 51})
        assert too_many.is_error and "limit must be from 1 to 50" in text(too_many)
    async with client(tmp_path, "dave") as dave:
        key = second["awaiting_approval"]["key"]
        answer = {"run_id": second["run_id"], "approve": True, "key": key}
        refused = await dave.call_tool("resume", answer)
        assert refused.is_error and text(refused).endswith(f"no run {second['run_id']!r}")
    assert ledger(tmp_path) == []
