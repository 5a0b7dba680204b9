"""The no-op governance defaults: no budget caps, every known tool allowed, no hooks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loomgraph.protocols import Decision, Reservation, ToolCall, ToolResult, ToolSpec, Usage
from loomgraph.protocols.events import drops_events
from loomgraph.protocols.idle import does_nothing

_ALLOW = Decision("allow", rule="default:allow-all")


class NoBudget:
    """A budget without caps: every reservation succeeds."""

    async def reserve(self, reservation: Reservation) -> Reservation:
        """Accept the reservation."""
        return reservation

    async def settle(self, reservation: Reservation, actual: Usage) -> None:
        """Nothing to settle (nothing is counted, so nothing is said)."""

    async def release(self, reservation: Reservation) -> None:
        """Nothing to release."""

    async def close(self) -> None:
        """Nothing to close."""


class AllowAll:
    """Permissions that allow every call to a known tool (unknown tools never run)."""

    reads_arguments = False  # so a call's arguments are not read for it

    async def check(
        self, call: ToolCall, spec: ToolSpec | None, *, user_id: str | None
    ) -> Decision:
        """Allow."""
        return _ALLOW


class NoHooks:
    """Hooks that do nothing."""

    @does_nothing
    async def before_node(self, node: str, state: Mapping[str, Any]) -> None:
        """Nothing."""

    @does_nothing
    async def after_node(self, node: str, patch: Mapping[str, Any]) -> None:
        """Nothing."""

    @does_nothing
    async def before_tool(self, call: ToolCall) -> Decision | None:
        """Let the call through."""
        return None

    @does_nothing
    async def after_tool(self, call: ToolCall, result: ToolResult) -> None:
        """Nothing."""

    @drops_events
    async def on_event(self, event: Any) -> None:
        """Nothing."""
