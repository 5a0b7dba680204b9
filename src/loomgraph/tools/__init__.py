"""Tools: plain Python functions the model may call, MCP servers, and the `ToolHost` that
runs them.

Write a tool as a typed function with a docstring (Google, NumPy, Sphinx or Epydoc style),
mark it with `@tool` (or pass it undecorated), or build one from a JSON Schema with
`Tool.from_schema`; give a list of them (and `MCPServer`s) to an Agent, `ToolRegistry` or
`as_tool_host`.
"""

from __future__ import annotations

from loomgraph.tools.context import Injected, MissingToolDependency, ToolContext
from loomgraph.tools.hosts import as_tool_host
from loomgraph.tools.json_schema import JsonArgumentsInvalid
from loomgraph.tools.mcp import MCPServer, MCPServerError, ServerToolHost, ToolNameCollision
from loomgraph.tools.registry import ToolRegistry
from loomgraph.tools.results import ToolErrorType, to_content
from loomgraph.tools.schema import KEY_PARAM
from loomgraph.tools.tool import Tool, tool

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
    "ToolErrorType",
    "ToolNameCollision",
    "ToolRegistry",
    "as_tool_host",
    "to_content",
    "tool",
]
