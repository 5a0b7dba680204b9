"""MCP tools as loomgraph tool specs, and MCP call results as loomgraph tool results.

Only plain values cross this module's boundary: `mcp` types are read by attribute, so this
module never imports the SDK itself.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from loomgraph.protocols import ImageBlock, ToolResult, ToolSpec, escaped
from loomgraph.protocols.messages import ToolOrigin
from loomgraph.protocols.tool_identity import digest
from loomgraph.tools.mcp.transports import Http, Stdio

SERVER_ERROR: Final = "mcp_server_error"
"""The `error_type` of a call that failed because its MCP server failed (died, hung, sent
garbage), as opposed to the tool reporting an error itself (`tool_exception`)."""

IDEMPOTENCY_META: Final = "io.loomgraph/idempotency-key"
"""The `_meta` key under which each `tools/call` request carries its idempotency key."""


@dataclass(frozen=True, slots=True)
class Trust:
    """How a server's tools are treated: every flag is the safe one unless `trusted`."""

    trusted: bool = False

    def flags(self, annotations: Any) -> dict[str, bool]:
        """`destructive`, `egress` and `trusted` of one tool, from its annotations when the
        server is trusted (MCP's defaults: not read-only, destructive, open-world)."""
        if not self.trusted:
            return {"destructive": True, "egress": True, "trusted": False}
        read_only = _hint(annotations, "read_only_hint", default=False)
        destructive = not read_only and _hint(annotations, "destructive_hint", default=True)
        open_world = _hint(annotations, "open_world_hint", default=True)
        # An open-world tool brings outside text in, even from a trusted server.
        return {"destructive": destructive, "egress": open_world, "trusted": not open_world}


def _hint(annotations: Any, name: str, *, default: bool) -> bool:
    value = getattr(annotations, name, None) if annotations is not None else None
    return default if value is None else bool(value)


def to_spec(tool: Any, name: str, trust: Trust) -> ToolSpec:
    """The spec the model sees for one listed MCP tool, under its (maybe prefixed) name."""
    parameters = dict(tool.input_schema or {})
    parameters.setdefault("type", "object")
    parameters.setdefault("properties", {})
    flags = trust.flags(tool.annotations)
    return {
        "name": name,
        "description": tool.description or tool.title or "",
        "parameters": parameters,
        "destructive": flags["destructive"],
        "egress": flags["egress"],
        "trusted": flags["trusted"],
        "tool_type": "extension",  # runs in another process, the server's
    }


def origin(server: str, transport: Stdio | Http) -> ToolOrigin:
    """The origin of a server's tools (`ToolSpec.origin`): its name, and a digest of how it
    is reached — the command, arguments and working directory, or the URL — so that an
    approval does not cover the tools of another program given the same name. The digest
    only: a command line or URL may hold secrets. The environment and headers are left out:
    they hold credentials, which may be renewed while an approval waits."""
    if isinstance(transport, Stdio):
        how: dict[str, Any] = {
            "stdio": [transport.command, *transport.args],
            "cwd": transport.cwd,
        }
    else:
        how = {"http": transport.url}
    return {"kind": "mcp", "name": server, "reach": digest(how)}


def to_result(result: Any) -> ToolResult:
    """A `CallToolResult` as the text the model adapters send, with its images for models
    that can see them; `isError` → an error result."""
    blocks = list(result.content)
    # Each image is decoded once: its line in the text and its place in `images` agree.
    checked = {
        i: _image(block.mime_type, block.data)
        for i, block in enumerate(blocks)
        if getattr(block, "type", "") == "image" and block.mime_type in IMAGE_TYPES
    }
    # A server's text may hold NULs (or lone surrogates another reader let through): shown
    # as escapes, as a local tool's are (one unencodable text fails every later request).
    content = escaped(render(blocks, result.structured_content, checked))
    if result.is_error:
        return {
            "content": content or "the tool reported an error",
            "is_error": True,
            "error_type": "tool_exception",
        }
    images = [
        ImageBlock(media_type=blocks[i].mime_type, data=blocks[i].data)
        for i, size in checked.items()
        if isinstance(size, int)
    ]
    done: ToolResult = {"content": content, "is_error": False}
    if images:
        done["images"] = images
    return done


# The image types the model APIs take (another type stays a line in the text), with the
# bytes each kind of file starts with.
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_MAGIC = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
}


def _image(mime_type: str, data: str) -> int | str:
    """The decoded size of an image the model APIs take, or why it cannot be sent: the data
    is not base64, or its bytes are not the declared type (a model API refuses the whole
    request for either, and a mislabelled file is not what the server said it sent)."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (ValueError, TypeError):
        return "not valid base64"
    if mime_type == "image/webp":
        fits = raw[:4] == b"RIFF" and raw[8:12] == b"WEBP"
    else:
        fits = raw.startswith(_MAGIC[mime_type])
    if not fits:
        return f"declared {mime_type}, but the bytes are not {mime_type.split('/')[1].upper()}"
    return len(raw)


def render(
    blocks: Iterable[Any], structured: Any, images: Mapping[int, int | str] | None = None
) -> str:
    """Text blocks as they are; structured content as JSON when no text says it; images,
    audio, resources and links as one line each naming what they are (`images`: the checked
    size, or the problem, of each image block by its place)."""
    parts: list[str] = []
    has_text = False
    checked = images or {}
    for i, block in enumerate(blocks):
        kind = getattr(block, "type", "")
        if kind == "text":
            has_text = True
            parts.append(block.text)
        elif i in checked:
            size = checked[i]
            if isinstance(size, str):
                parts.append(f"[image left out: {size}]")
            else:
                parts.append(f"[image: {block.mime_type}, {size} bytes]")
        elif kind in ("image", "audio"):
            parts.append(f"[{kind}: {block.mime_type}, {_decoded_size(block.data)} bytes]")
        elif kind == "resource":
            parts.append(_resource(block.resource))
        elif kind == "resource_link":
            parts.append(
                f"[resource link: {block.uri}" + (f" — {block.name}]" if block.name else "]")
            )
        else:
            parts.append(f"[{kind or 'unknown'} content]")
    if structured is not None and not has_text:
        parts.insert(0, json.dumps(structured, ensure_ascii=False))
    return "\n".join(parts)


def _resource(resource: Any) -> str:
    text = getattr(resource, "text", None)
    mime = getattr(resource, "mime_type", None) or "unknown type"
    if isinstance(text, str):
        return f"[resource {resource.uri} ({mime})]\n{text}"
    blob = getattr(resource, "blob", "") or ""
    return f"[resource {resource.uri}: {mime}, {_decoded_size(blob)} bytes]"


def _decoded_size(data: str) -> int:
    """How many bytes base64 `data` holds (each four characters three, less the padding)."""
    return len(data) * 3 // 4 - (len(data) - len(data.rstrip("=")))


def server_error(server: str, tool: str, problem: str) -> ToolResult:
    """The call failed because its server did: the model sees why, the run goes on."""
    return {
        "content": f"MCP server {server!r} failed during a call of {tool!r}: {problem}",
        "is_error": True,
        "error_type": SERVER_ERROR,
    }
