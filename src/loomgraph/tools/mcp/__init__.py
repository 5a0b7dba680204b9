"""MCP servers as tool sources (`MCPServer.stdio`, `MCPServer.http`).

The `mcp` SDK is imported only when a server is first used, never by importing this package.
"""

from __future__ import annotations

from loomgraph.tools.mcp.convert import IDEMPOTENCY_META, SERVER_ERROR
from loomgraph.tools.mcp.host import ServerToolHost, ToolNameCollision
from loomgraph.tools.mcp.server import MCPListingTooLarge, MCPServer, MCPServerError

__all__ = [
    "IDEMPOTENCY_META",
    "SERVER_ERROR",
    "MCPListingTooLarge",
    "MCPServer",
    "MCPServerError",
    "ServerToolHost",
    "ToolNameCollision",
]
