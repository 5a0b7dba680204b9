"""Chat-completions requests from loomgraph's: the messages (tool calls as `function` calls,
tool results as `tool` messages), the tools, and the streamed request's parameters."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from loomgraph.protocols import Message, ModelRequest, Sampling, ToolSpec

__all__ = ["TOOL_ERROR_PREFIX", "openai_messages", "openai_params", "openai_tools"]

# The chat-completions API has no error flag on tool results; the model reads it from here.
TOOL_ERROR_PREFIX = "ERROR: "


def openai_messages(messages: Sequence[Message], system: str = "") -> list[dict[str, Any]]:
    """Map loomgraph messages (and the system prompt) to chat-completions messages."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": system})
    for message in messages:
        role = message["role"]
        content = message.get("content") or ""
        if role == "user":
            out.append({"role": "user", "content": content})
        elif role == "assistant":
            calls = message.get("tool_calls") or []
            entry: dict[str, Any] = {"role": "assistant", "content": content or None}
            if calls:
                entry["tool_calls"] = [
                    {
                        "id": call["id"],
                        "type": "function",
                        "function": {
                            "name": call["tool"],
                            "arguments": json.dumps(call.get("args") or {}),
                        },
                    }
                    for call in calls
                ]
            elif entry["content"] is None:
                entry["content"] = ""  # null content is only valid next to tool calls
            out.append(entry)
        elif role == "tool":
            if message.get("is_error"):
                content = TOOL_ERROR_PREFIX + content
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": message.get("tool_call_id", ""),
                    "content": content,
                }
            )
        else:
            raise ValueError(f"unknown message role {role!r}")
    return out


def openai_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Tool specs as chat-completions function tools."""
    out: list[dict[str, Any]] = []
    for spec in tools:
        function: dict[str, Any] = {
            "name": spec["name"],
            "parameters": spec.get("parameters") or {"type": "object", "properties": {}},
        }
        if spec.get("description"):
            function["description"] = spec["description"]
        out.append({"type": "function", "function": function})
    return out


def openai_params(
    model: str, request: ModelRequest, *, max_tokens: int, defaults: Sampling
) -> dict[str, Any]:
    """The `chat.completions.create()` arguments of a streamed request for `model`: the
    request's own max_tokens and sampling over the model's (`max_tokens`, `defaults`)."""
    params: dict[str, Any] = {
        "model": model,
        "messages": openai_messages(request.messages, request.system),
        "max_tokens": request.max_tokens or max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.tools:
        params["tools"] = openai_tools(request.tools)
    if request.tool_choice:
        params["tool_choice"] = {"type": "function", "function": {"name": request.tool_choice}}
    sampling = request.sampling(defaults)
    for name, value in (
        ("temperature", sampling.temperature),
        ("top_p", sampling.top_p),
        ("seed", sampling.seed),
    ):
        if value is not None:
            params[name] = value
    if sampling.stop_sequences:
        params["stop"] = list(sampling.stop_sequences)
    return params
