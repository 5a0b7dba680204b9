"""`loomgraph mcp-serve`: an Agent served over MCP, driven by the official SDK's client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

import loomgraph
from loomgraph.cli.agent_args import AgentNotFound, load_agent
from mcp_servers import PYTHON

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(loomgraph.__file__).resolve().parents[1]


async def test_run_streams_progress_and_resume_answers_the_approval() -> None:
    params = StdioServerParameters(
        command=PYTHON,
        args=[
            *("-m", "loomgraph.cli.main", "mcp-serve", "--agent", "mcp_agent:make_agent"),
            *("--user", "alice", "--approver"),
        ],
        env={"PYTHONPATH": f"{SRC}:{ROOT / 'tests'}"},
        cwd=str(ROOT),
    )
    progress: list[str] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        names = {t.name for t in (await session.list_tools()).tools}
        assert names == {"run", "resume", "approvals"}
        first = await session.call_tool(
            "run", {"prompt": "refund A-1"}, progress_callback=on_progress
        )
        assert not first.is_error
        stopped: Any = first.structured_content
        assert stopped["status"] == "awaiting_approval"
        assert stopped["awaiting_approval"]["tool"] == "refund"
        assert any(m.startswith("run_started") for m in progress)
        assert any(m.startswith("permission_decision") for m in progress)
        answer = {"run_id": stopped["run_id"], "approve": True}
        done = await session.call_tool(
            "resume",
            answer | {"key": stopped["awaiting_approval"]["key"]},
            progress_callback=on_progress,
        )
        finished: Any = done.structured_content
        assert finished["status"] == "completed" and finished["answer"] == "refund done"
        assert finished["run_id"] == stopped["run_id"]
        assert any("refunded A-1" in m for m in progress)
        unknown = await session.call_tool("resume", {"run_id": "nope", "approve": True})
        assert unknown.is_error


async def test_resume_without_an_answer_goes_on_past_an_expired_request(tmp_path: Path) -> None:
    """Past the request's deadline an approval is refused, saying how to go on; `resume`
    with neither answer sends the run on, the call denied as timed out."""
    clock = tmp_path / "clock"
    params = StdioServerParameters(
        command=PYTHON,
        args=[
            *("-m", "loomgraph.cli.main", "mcp-serve", "--agent", "mcp_agent:make_expiring_agent"),
            *("--user", "alice", "--approver"),
        ],
        env={"PYTHONPATH": f"{SRC}:{ROOT / 'tests'}", "MCP_CLOCK_FILE": str(clock)},
        cwd=str(ROOT),
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        stopped: Any = (await session.call_tool("run", {"prompt": "refund A-1"})).structured_content
        assert stopped["status"] == "awaiting_approval"
        asked = stopped["awaiting_approval"]
        assert asked["expired"] is False and asked["deadline"] > 0
        clock.write_text("3600")  # nobody answered for an hour
        listed: Any = (await session.call_tool("approvals", {})).structured_content
        assert listed["runs"][0]["awaiting_approval"]["expired"] is True
        key = stopped["awaiting_approval"]["key"]
        late = await session.call_tool(
            "resume", {"run_id": stopped["run_id"], "approve": True, "key": key}
        )
        assert late.is_error and "expired" in str(late.content), late.content
        progress: list[str] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(message or "")

        on = await session.call_tool(
            "resume", {"run_id": stopped["run_id"]}, progress_callback=on_progress
        )
        finished: Any = on.structured_content
        assert finished["status"] == "completed", on.content
        assert not any("refunded A-1" in m for m in progress)
        assert any("approval timed out" in m for m in progress), progress


def test_agent_argument_errors_name_the_problem() -> None:
    with pytest.raises(AgentNotFound, match="MODULE:ATTR"):
        load_agent("mcp_agent")
    with pytest.raises(AgentNotFound, match="not an Agent"):
        load_agent("mcp_agent:refund")
    assert load_agent("mcp_agent:make_agent").instructions == "Refund desk."
