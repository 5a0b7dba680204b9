"""The tool host: the tools an agent offers, and how a call is executed."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from loomgraph.protocols.messages import ToolCall, ToolResult, ToolSpec

__all__ = ["ToolHost"]


@runtime_checkable
class ToolHost(Protocol):
    """The tools an agent offers, and how they are executed."""

    def specs(self) -> list[ToolSpec]:
        """The tools the model may call."""
        ...

    def spec(self, name: str) -> ToolSpec | None:
        """One tool's spec, or None when no such tool exists."""
        ...

    async def call(self, call: ToolCall, *, idempotency_key: str) -> ToolResult:
        """Execute one call; every failure becomes an error result, never an exception."""
        ...

    async def close(self) -> None:
        """Release what the tools hold (connections, processes)."""
        ...
