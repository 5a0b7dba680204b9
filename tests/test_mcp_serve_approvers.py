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
        # Answering is all the role gives: dave's run, which a person may still answer, is
        # not alice's to send on without an answer.
        crash_resume = await alice.call_tool("resume", {"run_id": run_id})
        assert crash_resume.is_error and "AnswerNeeded" in text(crash_resume)
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


async def test_an_approver_sends_another_users_run_on_past_an_expired_request(
    tmp_path: Path,
) -> None:
    """As over HTTP: `resume` with neither answer reaches another user's run for an
    approver while it waits for an approval — refused while a person may still answer, sent
    on (the call denied as timed out) once the request expired."""
    clock = tmp_path / "clock"
    async with client(tmp_path, "dave", clock=clock) as dave:
        started: Any = (await dave.call_tool("run", {"prompt": "pay bob"})).structured_content
        run_id = started["run_id"]
    async with client(tmp_path, "alice", "--approver", clock=clock) as alice:
        early = await alice.call_tool("resume", {"run_id": run_id})
        assert early.is_error and "AnswerNeeded" in text(early), text(early)
        clock.write_text("3600")  # nobody answered for an hour
        told: Any = (await alice.call_tool("resume", {"run_id": run_id})).structured_content
        # The pay was denied as timed out; the run went on to ask for the wire.
        assert told["status"] == "awaiting_approval", told
        assert told["awaiting_approval"]["tool"] == "wire"
        assert set(told) == {"run_id", "status", "awaiting_approval"}
    assert ledger(tmp_path) == []


async def test_an_approver_reaches_no_other_users_run_that_waits_for_no_approval(
    tmp_path: Path,
) -> None:
    """Another user's finished run answers an approver's `resume`, an answer or none, as
    a run that does not exist: its status is not told."""
    async with client(tmp_path, "dave") as dave:
        started: Any = (await dave.call_tool("run", {"prompt": "pay bob"})).structured_content
        run_id, key = started["run_id"], started["awaiting_approval"]["key"]
        denied = {"run_id": run_id, "approve": False, "key": key}
        await dave.call_tool("resume", denied)  # no role: refused, still waits
    async with client(tmp_path, "alice", "--approver") as alice:
        await alice.call_tool("resume", denied)
        second: Any = (await alice.call_tool("approvals", {})).structured_content
        [waiting] = second["runs"]
        last = {"run_id": run_id, "approve": False, "key": waiting["awaiting_approval"]["key"]}
        done: Any = (await alice.call_tool("resume", last)).structured_content
        assert done["status"] == "completed"
        for extra in ({}, {"approve": True, "key": key}, {"approve": False, "key": key}):
            theirs = await alice.call_tool("resume", {"run_id": run_id, **extra})
            unknown = await alice.call_tool("resume", {"run_id": "no-such-run", **extra})
            assert theirs.is_error and unknown.is_error, text(theirs)
            assert text(theirs).replace(run_id, "X") == text(unknown).replace("no-such-run", "X")
    assert ledger(tmp_path) == []
