"""Observability: tracing spans, telemetry, and the append-only audit log."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

__all__ = ["AuditLog", "Span", "Telemetry"]


class Span(Protocol):
    """The part of a tracing span loomgraph uses."""

    def set_attribute(self, key: str, value: Any) -> None:
        """Attach one attribute."""
        ...


@runtime_checkable
class Telemetry(Protocol):
    """Opens spans; `loom.run` → node → `chat {model}` / `execute_tool {tool}`."""

    def span(self, name: str, attributes: Mapping[str, Any]) -> AbstractContextManager[Span]:
        """A span for the duration of a `with` block."""
        ...


@runtime_checkable
class AuditLog(Protocol):
    """An append-only record of what the agent did and who allowed it."""

    async def record(
        self,
        action: str,
        *,
        run_id: str,
        user_id: str | None,
        actor: str,
        payload: Mapping[str, Any],
    ) -> None:
        """Append one entry."""
        ...

    async def close(self) -> None:
        """Release connections and file handles; the next use opens them again."""
        ...
