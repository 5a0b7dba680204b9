"""The tool host: the tools an agent offers, and how a call is executed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from loomgraph.protocols.messages import ToolCall, ToolResult, ToolSpec

__all__ = [
    "ArgumentChecker",
    "ArgumentReader",
    "StartableToolHost",
    "ToolHost",
    "ToolRun",
    "tool_run",
]


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


@runtime_checkable
class StartableToolHost(ToolHost, Protocol):
    """A host whose tools are known only once it has started (say, MCP servers to list)."""

    async def start(self) -> None:
        """Connect what is not connected and list its tools; called before each run.
        Raises a LoomgraphError naming the problem (a name collision, a server that
        cannot start)."""
        ...


class TextSink(Protocol):
    """Where a run keeps the untrusted text it has seen (engine.taint.UntrustedText)."""

    def add(self, content: str) -> None:
        """Keep one untrusted text."""
        ...


@runtime_checkable
class UntrustedDescriptions(Protocol):
    """A host some of whose tools are described by text nobody vouches for (say, the tools
    of an MCP server not trusted): each run counts that text as untrusted."""

    def watch_untrusted(self, untrusted: TextSink) -> None:
        """Add the untrusted descriptions offered now to `untrusted`, and those offered
        later while it is alive."""
        ...


@runtime_checkable
class ArgumentReader(Protocol):
    """A host whose tools convert the arguments they are sent (say, `"yes"` to true for a
    bool parameter): it says what a tool will receive, so that rules read that."""

    def received_args(self, call: ToolCall) -> dict[str, Any] | None:
        """The call's arguments as its tool will receive them, as JSON data; None when the
        tool takes them as sent, or refuses them."""
        ...


@runtime_checkable
class ArgumentChecker(Protocol):
    """A host that can say, without running anything, whether it would refuse a call's
    arguments: an approval's edited arguments are checked so before the approval is used
    (an approval is used once), by the same code that checks them at the call."""

    def argument_problem(self, call: ToolCall) -> str | None:
        """Why the call's tool would refuse its arguments (the `invalid_arguments` text the
        call would get), or None when they would be taken, or the host does not know the
        tool."""
        ...


@dataclass(frozen=True, slots=True)
class ToolRun:
    """The run a tool call belongs to, as the engine tells the tool host."""

    run_id: str
    user_id: str | None
    session_id: str | None
    node: str
    # Reports progress of the running call as a `tool_progress` event of the run.
    progress: Callable[[str, dict[str, Any]], Awaitable[None]]
    # The call's effect key (its idempotency key): what a run its tool starts waits behind.
    key: str = ""


tool_run: ContextVar[ToolRun | None] = ContextVar("loomgraph_tool_run", default=None)
"""The run of the tool call under way in this task (None outside a run's tool call)."""
