"""Messages API request parts from loomgraph's conversation: turns (tool calls as `tool_use`,
tool results as `tool_result` with their images), the system prompt and the tools, with
prompt-caching breakpoints when asked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loomgraph.protocols import ImageBlock, Message, ToolSpec

__all__ = ["anthropic_messages", "anthropic_system", "anthropic_tools"]

_EPHEMERAL = {"type": "ephemeral"}


def _tool_result_content(text: str, images: Sequence[ImageBlock]) -> Any:
    """A tool result's content: its text, or text and image blocks when it has images."""
    if not images:
        return text
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for image in images:
        source = {"type": "base64", "media_type": image["media_type"], "data": image["data"]}
        blocks.append({"type": "image", "source": source})
    return blocks


def anthropic_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Map loomgraph messages to Messages API turns.

    Assistant tool calls become `tool_use` blocks; each tool message becomes a `tool_result`
    block, and consecutive turns of the same API role (tool results, a following user
    message) are merged into one turn, as the API requires.
    """
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        content = message.get("content") or ""
        blocks: list[dict[str, Any]] = []
        if role == "tool":
            api_role = "user"
            blocks.append(
                {
                    "type": "tool_result",
                    "tool_use_id": message.get("tool_call_id", ""),
                    "content": _tool_result_content(content, message.get("images") or []),
                    "is_error": bool(message.get("is_error", False)),
                }
            )
        elif role in ("user", "assistant"):
            api_role = role
            # The API rejects empty text blocks, so an empty content adds none.
            if content:
                blocks.append({"type": "text", "text": content})
            for call in message.get("tool_calls") or ():
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call["id"],
                        "name": call["tool"],
                        "input": call.get("args") or {},
                    }
                )
        else:
            raise ValueError(f"unknown message role {role!r}")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == api_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": api_role, "content": blocks})
    return turns


def anthropic_system(system: str, *, caching: bool = False) -> str | list[dict[str, Any]] | None:
    """The `system` parameter: a string, or one text block with a cache breakpoint."""
    if not system:
        return None
    if caching:
        return [{"type": "text", "text": system, "cache_control": dict(_EPHEMERAL)}]
    return system


def anthropic_tools(tools: Sequence[ToolSpec], *, caching: bool = False) -> list[dict[str, Any]]:
    """Tool specs as Anthropic tools; with caching, a breakpoint on the last one."""
    out: list[dict[str, Any]] = []
    for spec in tools:
        tool: dict[str, Any] = {
            "name": spec["name"],
            "input_schema": spec.get("parameters") or {"type": "object", "properties": {}},
        }
        if spec.get("description"):
            tool["description"] = spec["description"]
        out.append(tool)
    if caching and out:
        # One breakpoint on the last tool caches every tool definition before it too.
        out[-1]["cache_control"] = dict(_EPHEMERAL)
    return out
