"""`EchoModel`: a zero-key model that answers with the last user message."""

from __future__ import annotations

from collections.abc import AsyncIterator

from loomgraph.protocols import ModelChunk, ModelRequest


class EchoModel:
    """Repeats the last user message (or tool result) back; needs no key and no network."""

    def __init__(self, name: str = "echo") -> None:
        self.name = name

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """One text chunk echoing the last message, then usage and finish."""
        last = request.messages[-1]["content"] if request.messages else ""
        yield {"type": "text", "text": last}
        yield {"type": "usage", "usage": {"input_tokens": max(1, request.prompt_chars() // 4),
                                          "output_tokens": max(1, len(last) // 4)}}
        yield {"type": "finish", "finish_reason": "end_turn"}
