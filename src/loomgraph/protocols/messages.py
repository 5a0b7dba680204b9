"""The conversation: messages, tool calls, tool specs and tool results (JSON-shaped dicts)."""

from __future__ import annotations

from typing import Any, Final, Literal

# pydantic validates a typing_extensions TypedDict on every Python (a fork patch's messages).
from typing_extensions import TypedDict

__all__ = [
    "INVALID_ARGUMENTS",
    "ImageBlock",
    "Message",
    "ToolCall",
    "ToolOrigin",
    "ToolResult",
    "ToolSpec",
]

# The `error_type` of a tool result whose call's arguments do not fit the tool's schema: the
# engine counts these (a model that cannot produce valid arguments must not loop).
INVALID_ARGUMENTS: Final = "invalid_arguments"


class ToolCall(TypedDict):
    """A tool call requested by the model."""

    id: str
    tool: str
    args: dict[str, Any]


class ImageBlock(TypedDict):
    """An image a tool returned, as the provider APIs take it: base64 data and its type."""

    media_type: str  # image/png, image/jpeg, image/gif or image/webp
    data: str  # base64


class _MessageBase(TypedDict):
    role: Literal["user", "assistant", "tool"]
    content: str


class Message(_MessageBase, total=False):
    """One conversation turn; `tool` messages answer one call each, in call order."""

    tool_calls: list[ToolCall]
    tool_call_id: str
    name: str
    is_error: bool
    # A tool message's images (from `ToolResult.images`), sent where the API takes them.
    images: list[ImageBlock]


class ToolOrigin(TypedDict):
    """Where a tool that is not a function of this process comes from (`ToolSpec.origin`)."""

    kind: str  # "mcp": a tool an MCP server lists
    name: str  # the server's name
    # A sha256 digest of how the server is reached (its command line, or its URL): never the
    # text itself, which may hold secrets.
    reach: str


class ToolSpec(TypedDict, total=False):
    """What the model is told about a tool: name, description and JSON Schema of arguments."""

    name: str
    description: str
    parameters: dict[str, Any]
    # Governance hints: a destructive tool asks by default; an egress tool sends data out of
    # the system; a trusted tool's results are not treated as untrusted input.
    destructive: bool
    egress: bool
    trusted: bool
    # The arguments that are file paths (matched after resolving symlinks) or shell commands.
    path_params: list[str]
    command_params: list[str]
    # Where the tool runs, as the OpenTelemetry GenAI conventions name it (`gen_ai.tool.type`):
    # "function" (in this process, the default) or "extension" (an MCP server's tool).
    tool_type: str
    # Where the tool comes from, when not from a function of this process (absent: a local
    # tool). Part of its identity (`protocols.tool_identity`), which an approval is bound to.
    origin: ToolOrigin


class ToolResult(TypedDict, total=False):
    """The outcome of one tool call as the model will see it."""

    content: str
    is_error: bool
    error_type: str
    # Images for models that can see them (the Anthropic adapter sends them with the result;
    # others read only `content`, which names each image).
    images: list[ImageBlock]
