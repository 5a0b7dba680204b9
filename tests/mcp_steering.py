"""What the tests of a steered stdio MCP server share (the server is `mcp_steered_server.py`:
it reads `STATE/control.json` at every listing and call, and records each start and call in
`STATE/ledger`, outside the journal), and a uvicorn server that says when it listens."""

from __future__ import annotations

import json
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import uvicorn

from loomgraph.tools import MCPServer

SERVER = str(Path(__file__).with_name("mcp_steered_server.py"))
# Bounds, not waits: a loaded machine starts Python slowly, but never for a minute.
BOUNDS = {"start_timeout": 60.0, "timeout": 60.0}

TRANSFER = {
    "name": "transfer",
    "description": "Send money to someone.",
    "inputSchema": {
        "type": "object",
        "properties": {"to": {"type": "string"}, "amount": {"type": "integer"}},
        "required": ["to", "amount"],
        "additionalProperties": False,
    },
}
PAY: dict[str, Any] = {"tool_calls": [{"tool": "transfer", "args": {"to": "alice", "amount": 5}}]}


def server(state: Path, name: str, *extra: str, **options: Any) -> MCPServer:
    """A stdio server steered by `state`/control.json (`options` over `BOUNDS`)."""
    return MCPServer.stdio(
        sys.executable, SERVER, str(state), *extra, name=name, **{**BOUNDS, **options}
    )


def control(state: Path, tools: list[dict[str, Any]], answer: str = "echo", **more: Any) -> None:
    """What the steered server lists and how it answers, from its next listing or call on."""
    state.mkdir(exist_ok=True)
    (state / "control.json").write_text(json.dumps({"tools": tools, "answer": answer, **more}))


def received(state: Path) -> list[dict[str, Any]]:
    """The calls the server received (its side effects, kept outside the journal)."""
    path = state / "ledger"
    lines = path.read_text().splitlines() if path.exists() else []
    return [entry for entry in map(json.loads, lines) if "name" in entry]


def tool_results(history: list[Any]) -> list[dict[str, Any]]:
    """The tool messages a run's journal holds."""
    return [
        message
        for transition in history
        for message in transition.patch.get("messages", [])
        if message.get("role") == "tool"
    ]


class ListeningServer(uvicorn.Server):
    """uvicorn's server, saying when it listens (an event to wait on, not a flag to poll)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()
