"""The MCP client (tools/mcp/) as a probe found it, against small stdio servers this file
writes: a run under way after `agent.aclose()` started its server again, never to be
stopped; one `MCPServer` shared by two Agents was stopped under the other's call; a host
whose `sys.stderr` has no descriptor could start no stdio server; a slow start did not name
`start_timeout`. Each test's docstring says what went wrong before."""

from __future__ import annotations

import asyncio
import os
import textwrap
from pathlib import Path
from typing import Any

from loomgraph import Agent
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.tools import MCPServer
from mcp_servers import PYTHON, WAIT

SERVER = textwrap.dedent(
    '''
    """A probe server: `python probe_server.py STATE_DIR`; records what it sees in STATE_DIR."""
    import asyncio, os, sys
    from pathlib import Path
    from mcp.server.mcpserver import MCPServer

    state = Path(sys.argv[1])
    (state / f"pid-{os.getpid()}").write_text("")
    app = MCPServer("probe")

    @app.tool()
    def echo(text: str) -> str:
        """Echoes the text (and writes it down)."""
        (state / f"echo-{os.getpid()}").write_text(text, encoding="utf-8")
        return text

    @app.tool()
    async def slow() -> str:
        """Takes an hour."""
        (state / "slow_started").write_text("1")
        await asyncio.sleep(3600)
        return "done"

    app.run()
    '''
)


def probe_server(tmp: Path, **options: Any) -> tuple[MCPServer, Path]:
    """The probe server as an MCPServer named `p` (prefix `p`), and its state directory."""
    script = tmp / "probe_server.py"
    script.write_text(SERVER)
    state = tmp / "state"
    state.mkdir()
    options = {"timeout": 600.0, "start_timeout": 600.0, **options}
    return MCPServer.stdio(PYTHON, str(script), str(state), name="p", prefix="p", **options), state


def calls(*pairs: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {"tool_calls": [{"tool": name, "args": args} for name, args in pairs]}


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie does not count)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"


def pids(state: Path) -> list[int]:
    return [int(p.name.removeprefix("pid-")) for p in state.glob("pid-*")]


async def appears(path: Path) -> bool:
    """Wait (bounded) for a file the server writes."""
    for _ in range(int(WAIT / 0.05)):
        if path.exists():
            return True
        await asyncio.sleep(0.05)
    return False


# --------------------------------------------------------------------------- findings


async def test_a_run_under_way_does_not_restart_a_server_after_aclose(tmp_path: Path) -> None:
    """A user closes the Agent (`await agent.aclose()`) while a run is in an MCP call
    (shutting down a service, say). They expect the server stopped for good: no process of
    it left once aclose returned and the run ended. What happens: the call under way fails
    ("Connection closed; it is restarted on the next call"), the run goes on, its next call
    of the server starts a NEW server process, and nothing ever stops that one: it is left
    running after the agent was closed (and the call even ran)."""
    server, state = probe_server(tmp_path)
    model = ScriptedModel([calls(("p_slow", {})), calls(("p_echo", {"text": "hi"})), "end"])
    permissions = StandardPermissions(allow=["p_*"])
    agent = Agent("x", model=model, tools=[server], permissions=permissions)
    run = asyncio.create_task(agent.run("go"))
    assert await appears(state / "slow_started")
    await asyncio.wait_for(agent.aclose(), WAIT)
    await asyncio.wait_for(run, WAIT)  # the run itself ends either way
    left = [pid for pid in pids(state) if alive(pid)]
    try:
        assert left == [], f"server processes left running after agent.aclose(): {left}"
        assert not list(state.glob("echo-*")), "a closed agent's server was sent a call"
    finally:
        for pid in left:
            os.kill(pid, 9)


async def test_closing_one_agent_does_not_cut_another_agents_call(tmp_path: Path) -> None:
    """A user keeps one `MCPServer` object at module level (as docs/tools.md's example
    does) and builds an Agent per request (`async with Agent(..., tools=[server])`). Two
    requests overlap: the quick one ends and leaves its `async with`. They expect the other
    request's call under way to finish (or, if a server may serve one Agent only, the second
    Agent refused when built). What happens: the quick Agent's aclose stops the shared server
    process, and the slow request's call fails as `mcp_server_error` ("Connection closed")."""
    server, state = probe_server(tmp_path)
    permissions = StandardPermissions(allow=["p_*"])

    async def request(script: list[Any]) -> list[dict[str, Any]]:
        model = ScriptedModel(script)
        async with Agent("x", model=model, tools=[server], permissions=permissions) as agent:
            events = [e async for e in agent.stream("go")]
        return [e.payload["result"] for e in events if e.kind == "tool_result"]

    slow = asyncio.create_task(request([calls(("p_slow", {})), "end"]))
    assert await appears(state / "slow_started")
    quick = await request([calls(("p_echo", {"text": "q"})), "end"])
    assert quick == [{"content": "q", "is_error": False}]
    done, _ = await asyncio.wait({slow}, timeout=5)  # bounded: the slow call takes an hour
    try:
        assert not done, f"the other Agent's call was cut: {slow.result() if done else None}"
    finally:
        slow.cancel()
        await asyncio.gather(slow, return_exceptions=True)
        await server.close()


async def test_a_stdio_server_starts_when_sys_stderr_is_not_a_file(tmp_path: Path) -> None:
    """A user runs an Agent inside an app that has replaced `sys.stderr` with an object
    that is not a file (`contextlib.redirect_stderr(io.StringIO())`, a GUI's or a notebook's
    stream, a log capture). They expect the stdio server to start (its stderr going
    somewhere). What happens: every stdio server fails to start with `MCPServerError: cannot
    start python3 (stdio): UnsupportedOperation: fileno`, which blames the server for what
    is the host's stderr (transports.py passes `errlog=sys.stderr` to the SDK, which hands it
    to the subprocess as its stderr file descriptor)."""
    import contextlib
    import io

    server, _ = probe_server(tmp_path)
    model = ScriptedModel([calls(("p_echo", {"text": "hi"})), "end"])
    permissions = StandardPermissions(allow=["p_*"])
    with contextlib.redirect_stderr(io.StringIO()):
        async with Agent("x", model=model, tools=[server], permissions=permissions) as agent:
            result = await agent.run("go")
    assert result.status == "completed"


async def test_a_server_too_slow_to_start_says_it_ran_out_of_start_timeout(
    tmp_path: Path,
) -> None:
    """A user's stdio server takes longer to start than `start_timeout` (a cold
    `npx`/`uvx` download, say). They expect an `MCPServerError` saying the server did not
    start within the limit, and which setting that is, as a call's timeout says "timed out
    after N seconds". What happens: `MCP server 'p': cannot start python3 (stdio):
    TimeoutError` — no limit, no seconds, no `start_timeout` (connection.py `_hold` reports
    the bare `say(exc)` of anyio's fail_after)."""
    from loomgraph.tools import MCPServerError

    script = tmp_path / "sleepy.py"
    script.write_text("import time\ntime.sleep(3600)\n")  # never answers `initialize`
    server = MCPServer.stdio(PYTHON, str(script), name="p", start_timeout=1.0)
    agent = Agent("x", model=ScriptedModel(["end"]), tools=[server])
    try:
        try:
            await asyncio.wait_for(agent.run("go"), WAIT)
        except MCPServerError as exc:
            error = exc
        else:
            raise AssertionError("the start did not fail")
    finally:
        await agent.aclose()
    assert error.server == "p"
    assert "start_timeout" in str(error) or "1 second" in str(error), str(error)
