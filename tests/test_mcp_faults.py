"""MCP servers that misbehave: exit mid-call, hang past the timeout, write garbage instead of
JSON-RPC, lie in their annotations. Each is a tool error (or an ask), never a broken run,
and the journal keeps every call's outcome."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loomgraph import Agent
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.protocols import EffectStatus
from loomgraph.runtime import InMemoryRuntime
from loomgraph.tools import MCPServer
from loomgraph.tools.mcp import SERVER_ERROR
from mcp_servers import PYTHON, bad_server_script


def call(name: str) -> dict[str, Any]:
    return {"tool_calls": [{"tool": name, "args": {}}]}


async def test_crash_hang_garbage_and_lies(tmp_path: Path) -> None:
    script = bad_server_script(tmp_path)
    (tmp_path / "marker").write_text("keep me")
    server = MCPServer.stdio(
        PYTHON,
        str(script),
        "any",
        str(tmp_path),
        name="bad",
        prefix="bad",
        timeout=20,
        start_timeout=600,
    )
    runtime = InMemoryRuntime()
    model = ScriptedModel(
        [
            call("bad_ping"),
            call("bad_crash"),  # the server exits mid-call
            call("bad_ping"),  # ... and is started again
            call("bad_hang"),  # never answers: the timeout ends it
            call("bad_garbage"),  # not JSON-RPC, then nothing
            call("bad_ping"),
            call("bad_wipe"),  # claims read-only: not believed, so it asks
            "never reached",
        ]
    )
    permissions = StandardPermissions(allow=["bad_ping", "bad_crash", "bad_hang", "bad_garbage"])
    async with Agent(
        "x", model=model, tools=[server], runtime=runtime, permissions=permissions
    ) as agent:
        events = [e async for e in agent.stream("misbehave")]
        wipe = agent.deps.tools.spec("bad_wipe")
    results = [e.payload["result"] for e in events if e.kind == "tool_result"]
    ping, crash, ping_again, hang, garbage, ping_last = results
    assert ping["content"] == "pong" and ping_again["content"] == "pong"
    assert crash["is_error"] and crash["error_type"] == SERVER_ERROR
    assert (tmp_path / "starts").read_text() == "2"
    assert hang["is_error"] and hang["error_type"] == "timeout"
    assert garbage["is_error"] and garbage["error_type"] == "timeout"
    assert ping_last["content"] == "pong"
    # The lie: read-only and non-destructive, says the server; untrusted, so it asks.
    assert wipe is not None and wipe["destructive"] and wipe["egress"]
    completed = events[-1].payload
    assert completed["status"] == "awaiting_approval"
    assert (tmp_path / "marker").read_text() == "keep me"
    # The journal: every call that ran has its outcome, as the model saw it.
    run_id = events[0].run_id
    tools = [e for e in await runtime.effects(run_id) if e.kind == "tool"]
    assert [e.status for e in tools] == [EffectStatus.DONE] * 6
    assert [e.outcome for e in tools] == [dict(r) for r in results]


async def test_a_servers_start_does_not_count_against_a_calls_timeout(tmp_path: Path) -> None:
    # A call's `timeout` starts once the server is up: the start (and the restart after a
    # crash) is bounded by `start_timeout`. It used to run from the call's first moment, so a
    # server slower to start than `timeout` timed out every first call after a (re)start.
    script = bad_server_script(tmp_path)
    args = (str(script), "slow", str(tmp_path))
    server = MCPServer.stdio(PYTHON, *args, name="slow", timeout=1, start_timeout=600)
    try:
        first = await server.call("ping", {}, "k1")
        assert (first["content"], first["is_error"]) == ("pong", False), first
        crashed = await server.call("crash", {}, "k2")
        assert crashed.get("error_type") == "mcp_server_error", crashed
        again = await server.call("ping", {}, "k3")
        assert (again["content"], again["is_error"]) == ("pong", False), again
        assert (tmp_path / "starts").read_text() == "2"
    finally:
        await server.close()
