"""`EchoModel`: a zero-key model that answers with the last user message."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from loomgraph.protocols import ModelChunk, ModelRequest, Usage


class EchoModel:
    """Repeats the last user message (or tool result) back; needs no key and no network."""

    def __init__(self, name: str = "echo") -> None:
        self.name = name

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """One text chunk echoing the last message, then usage and finish."""
        last = request.messages[-1]["content"] if request.messages else ""
        if request.tool_choice:
            # Forced to answer through a tool: the echoed text, as JSON when it is JSON.
            yield {
                "type": "tool_call",
                "call": {
                    "id": f"echo_{request.call_index}",
                    "tool": request.tool_choice,
                    "args": _as_args(last),
                },
            }
        else:
            yield {"type": "text", "text": last}
        yield {
            "type": "usage",
            "usage": Usage(
                input_tokens=max(1, request.prompt_chars() // 4),
                output_tokens=max(1, len(last) // 4),
            ),
        }
        yield {"type": "finish", "finish_reason": "end_turn"}


def _as_args(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    return value if isinstance(value, dict) else {"value": value}
