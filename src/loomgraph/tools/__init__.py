"""Tools: plain Python functions the model may call, and the `ToolHost` that runs them.

Write a tool as a typed function with a Google-style docstring, mark it with `@tool` (or
pass it undecorated), and give a list of them to `ToolRegistry` or `as_tool_host`.
"""

from __future__ import annotations

from loomgraph.tools.registry import ToolRegistry, as_tool_host
from loomgraph.tools.results import ToolErrorType, to_content
from loomgraph.tools.schema import KEY_PARAM
from loomgraph.tools.tool import Tool, tool

__all__ = [
    "KEY_PARAM",
    "Tool",
    "ToolErrorType",
    "ToolRegistry",
    "as_tool_host",
    "to_content",
    "tool",
]
