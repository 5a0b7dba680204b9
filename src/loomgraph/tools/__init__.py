"""Tools: plain Python functions the model may call, MCP servers, and the `ToolHost` that
runs them.

Write a tool as a typed function with a docstring (Google, NumPy, Sphinx or Epydoc style),
mark it with `@tool` (or pass it undecorated), or build one from a JSON Schema with
`Tool.from_schema`; give a list of them (and `MCPServer`s) to an Agent, `ToolRegistry` or
`as_tool_host`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loomgraph.tools.context import Injected, MissingToolDependency, ToolContext
from loomgraph.tools.hosts import as_tool_host
from loomgraph.tools.json_schema import JsonArgumentsInvalid
from loomgraph.tools.registry import ToolRegistry
from loomgraph.tools.results import ToolErrorType, to_content
from loomgraph.tools.schema import KEY_PARAM, ToolDefaultInvalid
from loomgraph.tools.schema_defs import ToolSchemaNotJSON
from loomgraph.tools.tool import Tool, tool

if TYPE_CHECKING:
    from loomgraph.tools.mcp import MCPServer, MCPServerError, ServerToolHost, ToolNameCollision

# The MCP client (its SDK, jsonschema, the checks) is loaded when one of these is first used:
# an agent of local tools never loads it.
_MCP = frozenset({"MCPServer", "MCPServerError", "ServerToolHost", "ToolNameCollision"})

__all__ = [
    "KEY_PARAM",
    "Injected",
    "JsonArgumentsInvalid",
    "MCPServer",
    "MCPServerError",
    "MissingToolDependency",
    "ServerToolHost",
    "Tool",
    "ToolContext",
    "ToolDefaultInvalid",
    "ToolErrorType",
    "ToolNameCollision",
    "ToolRegistry",
    "ToolSchemaNotJSON",
    "as_tool_host",
    "to_content",
    "tool",
]


def __getattr__(name: str) -> Any:
    if name not in _MCP:
        raise AttributeError(f"module 'loomgraph.tools' has no attribute {name!r}")
    from loomgraph.tools import mcp

    return getattr(mcp, name)
