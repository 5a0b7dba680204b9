"""A small streamable-HTTP MCP server (plain ASGI, JSON answers) for
tests/test_mcp_lost_sessions.py, run under uvicorn on loopback in a thread.

It speaks just enough MCP for the `mcp` SDK's client: `initialize` (a session id per
initialize), `notifications/*` (202), `tools/list`, `tools/call`, `DELETE` (200). How it
misbehaves is chosen per instance:

- `get_status`: what a `GET` (the client's standing stream) is answered: 405 (as the spec
  says for a server with no stream) or 404 (as a server routing only `POST /mcp` answers:
  Express's `app.post`, a gateway's route table);
- `not_found_after_run`: tool names that run (their side effect is recorded) and are then
  answered HTTP 404 with a JSON-RPC error in the body, as a gateway that maps a tool's
  "not found" error to the HTTP status does;
- `lost_once`: tool names whose first call is answered as the SDK's server answers a session
  it no longer knows (404, a JSON-RPC error with `id: null`), without running.

`ledger` is the side-effect record, outside loomgraph's journal: one `(tool, item, key)` per
execution. A `hold` tool records, then waits (bounded) until `release` is set. `deleted`
holds the session ids the client ended (DELETE).
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from typing import Any

import uvicorn

from mcp_steering import ListeningServer

WAIT = 120.0
KEY_META = "io.loomgraph/idempotency-key"

_SCHEMA = {
    "type": "object",
    "properties": {"item": {"type": "string"}},
    "required": ["item"],
}
TOOLS = [
    {"name": "record", "description": "Record an item.", "inputSchema": _SCHEMA},
    {"name": "hold", "description": "Record an item, slowly.", "inputSchema": _SCHEMA},
]


class TinyMCP:
    """The server; a context manager that runs it on 127.0.0.1 (a free port)."""

    def __init__(
        self,
        *,
        get_status: int = 405,
        not_found_after_run: frozenset[str] = frozenset(),
        lost_once: frozenset[str] = frozenset(),
    ) -> None:
        self.get_status = get_status
        self.not_found_after_run = not_found_after_run
        self.lost_once = set(lost_once)
        self.deleted: list[str] = []
        self.ledger: list[tuple[str, str, str | None]] = []
        self.sessions: list[str] = []
        self.get_answered: list[str] = []  # session ids whose GET was answered
        # A GET answered twice: the client has read the first answer (it tries again after).
        self.get_again = threading.Event()
        self.holding = threading.Event()  # a `hold` call is running
        self.release = threading.Event()  # lets a `hold` call answer
        self.port = 0
        self._server: ListeningServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        session = headers.get("mcp-session-id")
        method = scope["method"]
        if method == "GET":
            self.get_answered.append(session or "")
            await _answer(send, self.get_status, b"")
            if len(self.get_answered) >= 2:
                self.get_again.set()
            return
        if method == "DELETE":
            self.deleted.append(session or "")
            await _answer(send, 200, b"")
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)
        rid, rpc = request.get("id"), request.get("method", "")
        if rpc == "initialize":
            sid = uuid.uuid4().hex
            self.sessions.append(sid)
            result = {
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": {"name": "tiny", "version": "1"},
            }
            await _json(send, 200, {"jsonrpc": "2.0", "id": rid, "result": result}, sid)
            return
        if rid is None:  # a notification
            await _answer(send, 202, b"")
            return
        if rpc == "tools/list":
            await _json(send, 200, {"jsonrpc": "2.0", "id": rid, "result": {"tools": TOOLS}})
            return
        if rpc == "tools/call":
            params = request.get("params") or {}
            name = params.get("name", "")
            item = (params.get("arguments") or {}).get("item", "")
            key = (params.get("_meta") or {}).get(KEY_META)
            if name in self.lost_once:
                self.lost_once.discard(name)
                error = {"code": -32600, "message": "Session not found"}
                await _json(send, 404, {"jsonrpc": "2.0", "id": None, "error": error})
                return
            self.ledger.append((name, item, key))
            if name == "hold":
                self.holding.set()
                await _blocking_wait(self.release)
            if name in self.not_found_after_run:
                error = {"code": -32002, "message": f"no such item: {item}"}
                await _json(send, 404, {"jsonrpc": "2.0", "id": rid, "error": error})
                return
            content = [{"type": "text", "text": f"{name} did {item}"}]
            answer: dict[str, Any] = {"content": content, "isError": False}
            await _json(send, 200, {"jsonrpc": "2.0", "id": rid, "result": answer})
            return
        await _json(send, 200, {"jsonrpc": "2.0", "id": rid, "result": {}})

    # ------------------------------------------------------------------ running

    def __enter__(self) -> TinyMCP:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self, log_level="warning", lifespan="on", timeout_graceful_shutdown=0
        )
        self._server = ListeningServer(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        assert self._server.listening.wait(WAIT), "the tiny MCP server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self.release.set()
        self._server.should_exit = True
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), "the tiny MCP server did not stop"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"


async def _blocking_wait(event: threading.Event) -> None:
    import asyncio

    await asyncio.to_thread(event.wait, WAIT)


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Any, status: int, payload: dict[str, Any], sid: str | None = None) -> None:
    headers = [(b"content-type", b"application/json")]
    if sid is not None:
        headers.append((b"mcp-session-id", sid.encode()))
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
