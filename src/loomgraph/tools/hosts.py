"""`as_tool_host`: what `Agent(tools=...)` accepts, made one `ToolHost`."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from loomgraph.protocols import ToolHost
from loomgraph.tools.registry import ToolRegistry

# Where `MCPServer` is defined: until something imported it, no object is one, so an agent
# without MCP servers never imports the MCP client (its SDK, jsonschema, the checks).
_MCP_SERVER_MODULE = "loomgraph.tools.mcp.server"


def as_tool_host(
    obj: object, *, timeout: float | None = 60.0, deps: Mapping[Any, Any] | None = None
) -> ToolHost:
    """A ToolHost from None, a list or tuple of functions, tools and `MCPServer`s, or an
    existing ToolHost. `deps` fill the tools' `Injected` parameters."""
    if _MCP_SERVER_MODULE in sys.modules:
        from loomgraph.tools.mcp import MCPServer, ServerToolHost

        if isinstance(obj, list | tuple):
            servers = [item for item in obj if isinstance(item, MCPServer)]
            if servers:
                local = [item for item in obj if not isinstance(item, MCPServer)]
                return ServerToolHost(ToolRegistry(local, timeout=timeout, deps=deps), servers)
        if isinstance(obj, MCPServer):
            return ServerToolHost(ToolRegistry(timeout=timeout, deps=deps), [obj])
    host = ToolRegistry.as_tool_host(obj, timeout=timeout, deps=deps)
    if deps and not isinstance(obj, list | tuple | type(None)):
        provide = getattr(host, "provide", None)
        if provide is None:
            raise TypeError(
                f"tool_deps were given but the tool host {type(host).__name__} cannot take them"
            )
        provide(deps)
    return host
