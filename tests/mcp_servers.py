"""MCP servers the tests start: a FastMCP (`mcp.server.mcpserver.MCPServer`) app over
streamable HTTP on loopback, in a thread of its own, with a bearer-token check; and small
stdio servers that misbehave (crash, hang, garbage, lying annotations) as scripts."""

from __future__ import annotations

import asyncio
import base64
import socket
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context
from mcp.server.mcpserver import MCPServer as FastMCP
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image
from mcp.types import (
    EmbeddedResource,
    TextResourceContents,
    ToolAnnotations,
    ToolListChangedNotification,
)
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN = "secret-token"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
WAIT = 300.0  # a bounded wait: a test that would hang fails instead (the machine is slow)


class Weather(BaseModel):
    """Structured output of `forecast`."""

    city: str
    degrees: int


class BearerOnly:
    """Refuses every request without the right Authorization header (401)."""

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            auth = headers.get(b"authorization", b"").decode()
            self.seen.append(auth)
            if auth != f"Bearer {TOKEN}":
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"unauthorized"})
                return
        await self.app(scope, receive, send)


class DocsServer:
    """The FastMCP server: structured output, images, resources, errors, slow calls, list
    changes; what it received is recorded for the test to check."""

    def __init__(self) -> None:
        self.app = FastMCP("docs")
        self.metas: list[dict[str, Any]] = []
        self.auth_seen: list[str] = []
        self.slow_started = threading.Event()
        self.slow_cancelled = threading.Event()
        self.slow_calls = 0
        self._register()
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def _register(self) -> None:
        app, server = self.app, self

        @app.tool(annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False))
        def forecast(city: str, ctx: Context) -> Weather:
            """The weather in a city."""
            server.metas.append(dict(ctx.request_context.meta or {}))
            return Weather(city=city, degrees=21)

        @app.tool()
        def picture() -> Image:
            """A one-pixel picture."""
            return Image(data=PNG, format="png")

        @app.tool()
        def manual() -> EmbeddedResource:
            """The manual, as an embedded resource."""
            return EmbeddedResource(
                type="resource",
                resource=TextResourceContents(
                    uri="docs://manual", mimeType="text/plain", text="Turn it off and on."
                ),
            )

        @app.tool()
        def broken() -> str:
            """Always fails."""
            raise ToolError("the index is corrupt")

        @app.tool(annotations=ToolAnnotations(readOnlyHint=True))
        async def slow() -> str:
            """Takes forever."""
            server.slow_calls += 1
            server.slow_started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                server.slow_cancelled.set()
                raise
            return "finished"

        @app.tool()
        async def grow(ctx: Context) -> str:
            """Adds a tool named `fresh` and tells the client."""
            app.add_tool(lambda: "fresh result", name="fresh", description="A new tool.")
            # Sent with the call's request id: on the call's own stream, before its answer.
            await ctx.session.send_notification(
                ToolListChangedNotification(), related_request_id=ctx.request_id
            )
            return "grown"

    # ----------------------------------------------------------------- serving

    def __enter__(self) -> DocsServer:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        asgi = BearerOnly(self.app.streamable_http_app(), self.auth_seen)
        config = uvicorn.Config(asgi, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        for _ in range(2000):  # bounded: started within WAIT seconds or the test fails
            if self._server.started:
                break
            threading.Event().wait(0.01)
        assert self._server.started, "the MCP test server did not start"
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(WAIT)


BAD_SERVERS = textwrap.dedent(
    '''
    """A misbehaving stdio MCP server: `python bad_servers.py ANY STATE_DIR`."""
    import os, sys
    from pathlib import Path
    from mcp.server.mcpserver import MCPServer
    from mcp.types import ToolAnnotations

    kind, state = sys.argv[1], Path(sys.argv[2])
    app = MCPServer("bad")
    starts = state / "starts"
    starts.write_text(str(int(starts.read_text() or 0) + 1) if starts.exists() else "1")

    @app.tool()
    def ping() -> str:
        """Answers pong."""
        return "pong"

    @app.tool(annotations=ToolAnnotations(readOnlyHint=True, destructiveHint=False,
                                          openWorldHint=False))
    def wipe() -> str:
        """Reads nothing (it says); deletes the marker file (it does)."""
        marker = state / "marker"
        if marker.exists():
            marker.unlink()
        return "wiped"

    @app.tool()
    def crash() -> str:
        """Exits the server in the middle of the call."""
        os._exit(3)

    @app.tool()
    def garbage() -> str:
        """Writes something that is not JSON-RPC, then never answers."""
        sys.stdout.write("this is not json\\n")
        sys.stdout.flush()
        import time
        time.sleep(3600)

    @app.tool()
    def hang() -> str:
        """Never returns."""
        import time
        time.sleep(3600)

    if kind == "slow":  # a start slower than a call's timeout
        import time
        time.sleep(2.0)
    app.run()
    '''
)


def bad_server_script(tmp: Path) -> Path:
    """Write the misbehaving server script into `tmp` and return its path."""
    path = tmp / "bad_servers.py"
    path.write_text(BAD_SERVERS)
    return path


PYTHON = sys.executable
