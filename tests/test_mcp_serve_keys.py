"""`loomgraph mcp-serve`: an approval given over MCP settles the request it names by its
`key`, or nothing. The approver shown `pay(bob, 1)` approves it; the run then asks for
`wire(mallory, 90000)`; the same `resume` message delivered again (a client's retry) is
refused, and the wire never runs. Driven by the official SDK's client over stdio, against a
SQLite journal; the agent is this module's `make_agent`."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

import loomgraph
from loomgraph import Agent, tool
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest

TESTS = Path(__file__).resolve().parent
SRC = Path(loomgraph.__file__).resolve().parents[1]


def _ledger(line: str) -> None:
    """What a tool did, outside the journal (the server is another process)."""
    with open(os.path.join(os.environ["KEYS_TEST_DIR"], "ledger"), "a") as f:
        f.write(line + "\n")


@tool
def pay(to: str, amount: int) -> str:
    """Pay someone."""
    _ledger(f"pay {to} {amount}")
    return f"paid {amount} to {to}"


@tool
def wire(to: str, amount: int) -> str:
    """Wire money abroad."""
    _ledger(f"wire {to} {amount}")
    return f"wired {amount} to {to}"


def script(request: ModelRequest) -> Any:
    """Pay bob 1, then wire mallory 90000, then answer."""
    if request.call_index == 0:
        return {"tool_calls": [{"id": "c1", "tool": "pay", "args": {"to": "bob", "amount": 1}}]}
    if request.call_index == 1:
        args = {"to": "mallory", "amount": 90000}
        return {"tool_calls": [{"id": "c2", "tool": "wire", "args": args}]}
    return "all done"


def make_agent() -> Agent:
    """Both tools ask a person first; the journal is a SQLite file in the test's folder. With
    MCP_CLOCK_FILE, requests expire after 60 s on a desk clock the test moves through that
    file (tests/desk_clock.py)."""
    journal = os.path.join(os.environ["KEYS_TEST_DIR"], "journal.db")
    timeout = None
    if os.environ.get("MCP_CLOCK_FILE"):
        import desk_clock

        desk_clock.follow_file(os.environ["MCP_CLOCK_FILE"])
        timeout = 60.0
    return Agent(
        "bank",
        model=ScriptedModel(script),
        tools=[pay, wire],
        permissions=StandardPermissions(ask=["pay", "wire"], approval_timeout_s=timeout),
        runtime=f"sqlite:{journal}",
        name="bank",
    )


@contextlib.asynccontextmanager
async def client(
    folder: Path, user: str, *options: str, clock: Path | None = None
) -> AsyncIterator[ClientSession]:
    """A session with `mcp-serve --user USER [options]` over stdio, its journal in `folder`;
    with `clock`, its desk clock follows that file (`make_agent`)."""
    params = StdioServerParameters(
        command=sys.executable,
        args=[
            *("-m", "loomgraph.cli.main", "mcp-serve", "--agent", "test_mcp_serve_keys:make_agent"),
            *("--user", user, *options),
        ],
        env={
            "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)]),
            "KEYS_TEST_DIR": str(folder),
            "PATH": os.environ.get("PATH", ""),
            "MCP_CLOCK_FILE": str(clock or ""),
        },
        cwd=str(TESTS),
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def approver(folder: Path) -> contextlib.AbstractAsyncContextManager[ClientSession]:
    """alice's session, with the approver role."""
    return client(folder, "alice", "--approver")


def text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def ledger(folder: Path) -> list[str]:
    path = folder / "ledger"
    return path.read_text().splitlines() if path.exists() else []


async def test_a_resent_approval_settles_no_later_request(tmp_path: Path) -> None:
    async with approver(tmp_path) as session:
        started: Any = (await session.call_tool("run", {"prompt": "pay bob"})).structured_content
        run_id, shown = started["run_id"], started["awaiting_approval"]
        assert shown["tool"] == "pay" and shown["args"] == {"to": "bob", "amount": 1}
        assert shown["call_id"] == "c1" and shown["key"].startswith(f"{run_id}:")
        # Without the key an answer could land on whatever is pending when it arrives.
        unnamed = await session.call_tool("resume", {"run_id": run_id, "approve": True})
        assert unnamed.is_error and "key is required" in text(unnamed)
        assert ledger(tmp_path) == []
        answer = {"run_id": run_id, "approve": True, "key": shown["key"]}
        paid: Any = (await session.call_tool("resume", answer)).structured_content
        asked = paid["awaiting_approval"]
        assert asked["tool"] == "wire" and asked["key"] != shown["key"]
        assert ledger(tmp_path) == ["pay bob 1"]
        resent = await session.call_tool("resume", answer)  # the same message again
        assert resent.is_error and "ApprovalNotPending" in text(resent)
        assert shown["key"] in text(resent) and asked["key"] in text(resent)
        assert ledger(tmp_path) == ["pay bob 1"]  # the wire nobody was shown did not run
        alone = await session.call_tool("resume", {"run_id": run_id, "key": asked["key"]})
        assert alone.is_error and "give approve" in text(alone)
        denied = {"run_id": run_id, "approve": False, "key": asked["key"]}
        done: Any = (await session.call_tool("resume", denied)).structured_content
        assert done["status"] == "completed" and done["answer"] == "all done"
        late = await session.call_tool("resume", denied)
        assert late.is_error and "ApprovalNotPending" in text(late)
    assert ledger(tmp_path) == ["pay bob 1"]
