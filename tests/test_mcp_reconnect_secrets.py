"""MCP servers reached again after a restart, and secrets in how a server is reached kept
out of what a run shows. Each test reproduces one defect against real servers (stdio:
tests/mcp_steered_server.py; HTTP: the `mcp` SDK's own server under uvicorn on loopback);
each waits only on bounded conditions."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer as FastMCP

from loomgraph import Agent
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest
from loomgraph.runtime import InMemoryRuntime
from loomgraph.tools import MCPServer
from mcp_steering import PAY, TRANSFER, ListeningServer, control, received, server

SLOW = {"start_timeout": 600.0, "timeout": 600.0}  # a loaded machine starts Python slowly
WAIT = 120.0  # bounds a server's start and stop in the tests below; neither waits on a client

# ------------------------------------------------------------ 2. a server that restarts


class LedgerApp:
    """A streamable HTTP MCP server (the SDK's own, under uvicorn) on a fixed loopback port,
    recording each `record` call; started again on the same port, it has no sessions."""

    def __init__(self, port: int, calls: list[str], path: str = "/mcp") -> None:
        self.port = port
        self.calls = calls
        self.path = path
        self._server: ListeningServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LedgerApp:
        app, calls = FastMCP("ledger"), self.calls

        @app.tool()
        def record(item: str) -> str:
            """Record an item."""
            calls.append(item)
            return f"recorded {item}"

        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        # A graceful shutdown of 0 seconds: a stopped server drops its connections (the
        # client's standing GET stream among them) as a restarted process does. Waiting for
        # that stream to end is what made a stop take WAIT seconds.
        config = uvicorn.Config(
            app.streamable_http_app(streamable_http_path=self.path),
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=0,
        )
        self._server = ListeningServer(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        assert self._server.listening.wait(WAIT), "the MCP test server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), "the MCP test server did not stop"


async def test_an_http_server_that_restarted_is_connected_to_again(tmp_path: Path) -> None:
    """An HTTP MCP server is redeployed (restarted on the same address) while the Agent
    lives: it no longer knows the Agent's session and answers 404. The user sees every later
    call fail with `tool_exception: Session not found`, for as long as the Agent lives: the
    server is never connected to again. They should see the next call (or the one after the
    failed one) start a new session and run, as docs/tools.md promises for a server "whose
    connection breaks" ("started again by the next call"). A call the server answered 404
    never ran there, so it is sent again on the new session: it runs once, not twice."""
    calls: list[str] = []
    record: list[Any] = [{"tool_calls": [{"tool": "record", "args": {"item": "x"}}]}, "done"]
    with LedgerApp(0, calls) as first:
        port = first.port
        mcp = MCPServer.http(f"http://127.0.0.1:{port}/mcp", name="ledger", timeout=60)
        agent = Agent(
            "x",
            model=ScriptedModel(record),
            tools=[mcp],
            permissions=StandardPermissions(allow=["record"]),
        )
        async with agent:
            assert (await agent.run("one")).status == "completed"
            assert calls == ["x"]
            first.__exit__(None, None, None)
            with LedgerApp(port, calls):
                events = [e async for e in agent.stream("again")]
    (result,) = [e.payload["result"] for e in events if e.kind == "tool_result"]
    assert not result.get("is_error"), f"never reconnected: {result['content']}"
    assert calls == ["x", "x"]  # the call refused with 404 ran once, on the new session


# ------------------------------------------------------------ 3. secrets


async def test_a_secret_on_a_stdio_command_line_stays_out_of_the_run(tmp_path: Path) -> None:
    """A stdio server is given its API key on its command line (`--api-key=...`, as many
    servers take it). It dies mid-call and cannot start again. The user finds the key in the
    tool result the model was sent (so at the model provider), in the journal (so in
    `loomgraph runs show` and the HTTP API) and in the run's events: the error says
    `cannot start <the whole command line>`. They should find the key in none of them (the
    command line masked as a URL's credentials are, or the server named without its argv)."""
    secret = "sk-live-ARGV-0123456789abcdef"
    state = tmp_path / "bank"
    control(state, [TRANSFER], answer="die")
    mcp = server(state, "bank", f"--api-key={secret}", **SLOW)
    turns = [PAY, PAY, "done"]
    seen: list[ModelRequest] = []

    def model(request: ModelRequest) -> Any:
        seen.append(request)
        return turns[request.call_index]

    runtime = InMemoryRuntime()
    async with Agent(
        "x",
        model=ScriptedModel(model),
        tools=[mcp],
        permissions=StandardPermissions(allow=["transfer"]),
        runtime=runtime,
    ) as agent:
        events = []
        async for event in agent.stream("pay"):
            events.append(event)
            if event.kind == "tool_result":  # died mid-call; now it cannot start again
                control(state, [TRANSFER], answer="die", start="exit")
        effects = await runtime.effects(events[0].run_id)
    results = [e.payload["result"] for e in events if e.kind == "tool_result"]
    assert len(results) == 2 and all(r["error_type"] == "mcp_server_error" for r in results)
    sent = json.dumps([r.messages for r in seen], default=str)
    journal = json.dumps([(e.intent, e.outcome) for e in effects], default=str)
    shown = json.dumps([e.payload for e in events], default=str)
    places = [("model", sent), ("journal", journal), ("events", shown)]
    leaks = [where for where, text in places if secret in text]
    assert leaks == [], f"the command line's key reached: {leaks}"
    assert "mcp_steered_server.py" not in sent  # nor any other argument
    assert [call["name"] for call in received(state)] == ["transfer"]  # it may have run: once


async def test_a_secret_in_an_http_url_path_stays_out_of_the_run() -> None:
    """An HTTP server takes its token in the URL's path (`/mcp/<token>`, as some hosted
    servers do). It stops while the Agent lives and cannot be reached again. The user found
    the token in the tool results the model was sent, the journal and the events (the error
    said `cannot start <the URL, its path as it is>`). They should find it in none of them:
    the server is named by its scheme, host and port."""
    secret = "tok-PATH-0123456789abcdef"
    calls: list[str] = []
    record = {"tool_calls": [{"tool": "record", "args": {"item": "x"}}]}
    turns: list[Any] = [record, "done", record, record, "done"]
    seen: list[ModelRequest] = []

    def model(request: ModelRequest) -> Any:
        seen.append(request)
        return turns[len(seen) - 1]

    runtime = InMemoryRuntime()
    with LedgerApp(0, calls, path=f"/mcp/{secret}") as app:
        url = f"http://127.0.0.1:{app.port}/mcp/{secret}"
        mcp = MCPServer.http(url, name="ledger", timeout=60, start_timeout=60)
        agent = Agent(
            "x",
            model=ScriptedModel(model),
            tools=[mcp],
            permissions=StandardPermissions(allow=["record"]),
            runtime=runtime,
        )
        async with agent:
            assert (await agent.run("one")).status == "completed"
            app.__exit__(None, None, None)  # gone for good: every later call fails
            events = [e async for e in agent.stream("again")]
            effects = await runtime.effects(events[0].run_id)
    assert secret not in repr(mcp) and secret not in mcp.label()
    results = [e.payload["result"] for e in events if e.kind == "tool_result"]
    assert [r["error_type"] for r in results] == ["mcp_server_error"] * 2
    assert f"cannot start http://127.0.0.1:{app.port}:" in results[1]["content"]
    sent = json.dumps([r.messages for r in seen], default=str)
    journal = json.dumps([(e.intent, e.outcome) for e in effects], default=str)
    shown = json.dumps([e.payload for e in events], default=str)
    places = [("model", sent), ("journal", journal), ("events", shown)]
    leaks = [where for where, text in places if secret in text]
    assert leaks == [], f"the URL path's token reached: {leaks}"
