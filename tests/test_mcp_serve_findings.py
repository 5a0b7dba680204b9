"""`loomgraph mcp-serve` tells its client what went wrong, never nothing. Driven from outside
with the official `mcp` SDK's client over stdio and over streamable HTTP on loopback:

- a prompt over the agent's size limit is a tool error naming the limit (`InputTooLarge`);
- `resume` of a run another call is driving is a tool error saying so (`RunConflict`), over
  --http with two clients of one user, and names no lease owner's host or process;
- `resume` of a finished run is a tool error saying it is finished (`RunFinished`);
- `resume` with edited `args` but without `approve: true` is refused (with no `approve`, and
  with `approve: false`), never silently dropped, and nothing runs;
- over stdio, a request whose JSON holds a lone surrogate escape is answered with a JSON-RPC
  error saying the text is not valid Unicode, and so is a line that is not JSON at all;
- a failure that is the server's fault reaches the client as an error id, never its text.

This module is also the served agent (`--agent test_mcp_serve_findings:make_agent`): the
server subprocess imports it from tests/, with its journal in $MCP_SERVE_FINDINGS_DIR.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent, tool
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.protocols.bundle import SizeLimits
from mcp_served import free_port, served, text

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
AGENT = "test_mcp_serve_findings:make_agent"
WAIT = 120.0  # every wait is bounded: a test that would hang fails instead
BARE = "Error executing tool"  # what the SDK says of a tool that raised anything but ToolError
PROMPT_CHARS = 1000  # the served agent's prompt limit (SizeLimits.prompt_chars)


# ------------------------------------------------------------------ the served agent


def _folder() -> Path:
    return Path(os.environ["MCP_SERVE_FINDINGS_DIR"])


@tool
async def hold(order: str) -> str:
    """Hold until the test releases it (a file), so a run stays `running` meanwhile."""
    (_folder() / "held").write_text(order, encoding="utf-8")
    deadline = time.monotonic() + WAIT
    while not (_folder() / "release").exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return f"held {order}"


@tool(destructive=True)
def refund(order: str) -> str:
    """Refund an order (asks for approval first); logs ORDER so a test sees it ran."""
    with (_folder() / "refunds.log").open("a", encoding="utf-8") as log:
        log.write(order + "\n")
    return f"refunded {order}"


def _script(request: Any) -> Any:
    last = request.messages[-1]
    text = str(last.get("content") or "")
    if last.get("role") == "user" and text.startswith("hold "):
        return {"tool_calls": [{"id": "c1", "tool": "hold", "args": {"order": text[5:]}}]}
    if last.get("role") == "user" and text.startswith("refund "):
        return {"tool_calls": [{"id": "c1", "tool": "refund", "args": {"order": text[7:]}}]}
    if last.get("role") == "tool":
        return f"done: {text}"
    return "ok"


def make_agent() -> Agent:
    """The served agent: a SQLite journal in $MCP_SERVE_FINDINGS_DIR, a small prompt limit."""
    return Agent(
        "Findings desk.",
        name="findings",
        model=ScriptedModel(_script),
        tools=[hold, refund],
        permissions=StandardPermissions(),
        runtime=f"sqlite:{_folder() / 'journal.db'}",
        size_limits=SizeLimits(prompt_chars=PROMPT_CHARS),
    )


# ------------------------------------------------------------------ harness


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MCP_SERVE_FINDINGS_DIR", str(tmp_path))
    return tmp_path


def environment(folder: Path) -> dict[str, str]:
    return {
        "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)]),
        "MCP_SERVE_FINDINGS_DIR": str(folder),
        "PATH": os.environ.get("PATH", ""),
    }


def command(*options: str) -> list[str]:
    return [sys.executable, "-m", "loomgraph.cli.main", "mcp-serve", "--agent", AGENT, *options]


def refunds(folder: Path) -> str:
    log = folder / "refunds.log"
    return log.read_text(encoding="utf-8") if log.exists() else ""


async def runs_of(user: str) -> list[Any]:
    agent = make_agent()
    try:
        return list(await agent.deps.runtime.runs(user))
    finally:
        await agent.aclose()


async def until(check: Any, what: str) -> None:
    """Wait (bounded) until `check()` holds."""
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def stdio_session(folder: Path) -> AsyncIterator[Any]:
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(
        command=sys.executable,
        args=command("--user", "alice", "--approver")[1:],
        env=environment(folder),
        cwd=str(TESTS),
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await asyncio.wait_for(session.initialize(), WAIT)
        yield session


def http_server(folder: Path) -> contextlib.AbstractContextManager[str]:
    """`mcp-serve --http` on a loopback port; its /mcp URL once it accepts connections."""
    port = free_port()
    return served(command("--http", str(port)), port, environment(folder), folder, WAIT)


async def approver_key() -> str:
    from loomgraph.serve.store import open_store

    agent = make_agent()
    await agent.deps.runtime.connect()
    store = open_store(agent.deps.runtime)
    try:
        return await store.add_key("alice", approver=True)
    finally:
        await store.close()
        await agent.aclose()


@contextlib.asynccontextmanager
async def http_session(url: str, key: str) -> AsyncIterator[Any]:
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    headers = {"Authorization": f"Bearer {key}"}
    async with (
        create_mcp_http_client(headers=headers) as client,
        streamable_http_client(url, http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await asyncio.wait_for(session.initialize(), WAIT)
        yield session


# ------------------------------------------------------------------ the findings


async def test_a_prompt_over_the_agents_limit_is_a_tool_error_naming_the_limit(
    folder: Path,
) -> None:
    """InputTooLarge reaches the client as a tool error saying the prompt is too large and
    what the limit is (`loomgraph serve` answers 413 `too_large`), not the SDK's bare
    "Error executing tool run"."""
    async with stdio_session(folder) as session:
        result = await session.call_tool("run", {"prompt": "x" * (PROMPT_CHARS * 2)})
    assert result.is_error
    assert str(PROMPT_CHARS) in text(result) and "limit" in text(result), text(result)
    assert "InputTooLarge" in text(result), text(result)


async def test_resume_of_a_run_another_call_drives_is_a_run_conflict_over_http(
    folder: Path,
) -> None:
    """Two clients of one user over --http: while one's `run` is still going (its tool
    holds), the other's `resume` of it is a tool error saying the run is driven elsewhere
    (`RunConflict`, as `loomgraph serve`'s 409 `run_conflict`), naming no lease owner."""
    key = await approver_key()
    with http_server(folder) as url:
        async with http_session(url, key) as first, http_session(url, key) as second:
            running = asyncio.create_task(first.call_tool("run", {"prompt": "hold H-1"}))
            try:
                await until(lambda: (folder / "held").exists(), "the tool to start")
                (run,) = await runs_of("alice")
                conflict = await second.call_tool("resume", {"run_id": run.run_id})
            finally:
                (folder / "release").write_text("go", encoding="utf-8")
                finished = await asyncio.wait_for(running, WAIT)
    assert not finished.is_error, text(finished)
    assert conflict.is_error
    assert text(conflict).strip() != f"{BARE} resume", "the conflict is not named at all"
    assert any(w in text(conflict) for w in ("RunConflict", "running", "driven")), text(conflict)
    # The lease's owner (host and process id) is for the server's operators, not the client.
    assert "leased by" not in text(conflict) and socket.gethostname() not in text(conflict)


async def test_resume_of_a_finished_run_says_it_is_finished(folder: Path) -> None:
    """`resume` (no answer) of one's own completed run is a tool error saying the run is
    finished (`RunFinished`, as `loomgraph serve`'s 409 `run_finished`), naming its status."""
    async with stdio_session(folder) as session:
        done: Any = (await session.call_tool("run", {"prompt": "hello"})).structured_content
        assert done["status"] == "completed"
        again = await session.call_tool("resume", {"run_id": done["run_id"]})
    assert again.is_error
    assert any(w in text(again) for w in ("finished", "completed", "RunFinished")), text(again)
    assert "RunFinished" in text(again) and "completed" in text(again), text(again)


async def test_edited_args_without_approve_true_are_refused_not_dropped(folder: Path) -> None:
    """Edited `args` go only with `approve: true`: without `approve`, or with `approve:
    false` (a denied call does not run, so it takes no arguments), they are refused with a
    tool error, as an unknown argument is; nothing runs and the run still waits."""
    async with stdio_session(folder) as session:
        first: Any = (await session.call_tool("run", {"prompt": "refund A-1"})).structured_content
        assert first["status"] == "awaiting_approval"
        edited = {"run_id": first["run_id"], "args": {"order": "A-2"}}
        answer = await session.call_tool("resume", edited)
        key = first["awaiting_approval"]["key"]
        denied = await session.call_tool("resume", edited | {"approve": False, "key": key})
        (run,) = await runs_of("alice")
    assert refunds(folder) == ""
    assert answer.is_error, f"args were silently dropped: {text(answer)}"
    assert "args" in text(answer) and "approve" in text(answer), text(answer)
    assert denied.is_error, f"args were silently dropped: {text(denied)}"
    assert "args" in text(denied) and "approve" in text(denied), text(denied)
    assert str(run.status) == "awaiting_approval"


def test_unreadable_lines_are_answered_over_stdio(folder: Path) -> None:
    """A `run` whose prompt holds a lone surrogate escape (JavaScript's JSON.stringify writes
    a lone UTF-16 half as `\\ud800`) is answered with a JSON-RPC error for its id saying the
    text is not valid Unicode (as `loomgraph serve` says), not dropped while the client
    waits for ever; a line that is not JSON is answered with a parse error (id null)."""
    process = subprocess.Popen(
        command("--user", "alice"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=environment(folder),
        cwd=TESTS,
    )
    assert process.stdin is not None and process.stdout is not None

    def send(line: str) -> None:
        assert process.stdin is not None
        process.stdin.write((line + "\n").encode())
        process.stdin.flush()

    def answer(seconds: float) -> dict[str, Any] | None:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], seconds)
        return json.loads(process.stdout.readline()) if ready else None

    try:
        hello = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "p"}}
        send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello}))
        assert answer(WAIT) is not None
        send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        call = '{"name": "run", "arguments": {"prompt": "half \\ud800 of a pair"}}'
        send('{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": ' + call + "}")
        send("this is not JSON")
        send(json.dumps({"jsonrpc": "2.0", "id": 8, "method": "tools/list"}))
        seen = []
        while (message := answer(30)) is not None:  # the listing comes; the call's answer?
            seen.append(message)
            if message.get("id") == 8:
                break
        assert any(m.get("id") == 8 for m in seen), "the server answered nothing at all"
        if not any(m.get("id") in (7, None) for m in seen):
            late = answer(10)  # a slow answer to 7 after the listing
            seen += [late] if late is not None else []
        assert any(m.get("id") in (7, None) and "error" in m for m in seen) or any(
            m.get("id") == 7 and m.get("result", {}).get("isError") for m in seen
        ), f"request 7 was never answered: {seen}"
        (seven,) = [m for m in seen if m.get("id") == 7]
        assert seven["error"]["code"] == -32700, seven
        assert "not valid Unicode" in seven["error"]["message"], seven
        assert "prompt" in seven["error"]["message"], seven
        (garbage,) = [m for m in seen if "id" in m and m["id"] is None]
        assert garbage["error"]["code"] == -32700 and "not JSON" in garbage["error"]["message"]
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=60)
    assert not (folder / "journal.db").exists() or not asyncio.run(runs_of("alice"))


def test_json_that_is_no_json_rpc_message_is_an_invalid_request() -> None:
    """JSON the SDK reads but cannot take as a JSON-RPC message is answered -32600 with id
    null (its error holds no line to find an id in), saying what is wrong."""
    import mcp_types
    from pydantic import ValidationError

    from loomgraph.cli.mcp_serve_errors import unreadable

    line = '{"jsonrpc": "2.0", "id": 3, "method": 5}'
    with pytest.raises(ValidationError) as raised:
        mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
    answer = unreadable(raised.value)
    assert answer.id is None and answer.error.code == -32600, answer
    assert "not a JSON-RPC message" in answer.error.message and "method" in answer.error.message


def test_a_failure_of_the_server_is_an_error_id_not_its_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What only the server's log may hold (here a connection string) never reaches the
    client: an untyped failure in a tool is a tool error with an error id, logged with its
    traceback under that id."""
    from mcp.server.mcpserver.exceptions import ToolError

    from loomgraph.cli.mcp_serve_errors import answered

    async def run() -> str:
        raise RuntimeError("cannot reach postgresql://app:s3cret@db/prod")

    with pytest.raises(ToolError) as raised:
        asyncio.run(answered(run)())
    said = str(raised.value)
    assert "s3cret" not in said and "error id" in said, said
    error_id = said.split("error id ")[1].split(":")[0]
    assert any(error_id in r.getMessage() and r.exc_info for r in caplog.records)
