"""`ServerToolHost`: an agent's local tools and its MCP servers' tools as one `ToolHost`."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, cast

from loomgraph.errors import LoomgraphError
from loomgraph.protocols import ArgumentReader, ToolCall, ToolHost, ToolResult, ToolSpec
from loomgraph.tools import results
from loomgraph.tools.mcp.server import MCPServer

_log = logging.getLogger(__name__)


class ToolNameCollision(LoomgraphError, ValueError):
    """Two tools (of two MCP servers, or of a server and the local tools) share one name."""

    def __init__(self, name: str, first: str, second: str) -> None:
        super().__init__(
            f"tool name {name!r} is offered by both {first} and {second}; give one of the "
            "servers a prefix (MCPServer.stdio(..., prefix=...)) or rename the local tool"
        )
        self.name = name
        self.first = first
        self.second = second


class ServerToolHost:
    """Local tools (a ToolHost, usually a ToolRegistry) plus the tools of MCP servers.

    `start()` connects the servers (each once; a dead one again); the first start checks
    that no two tools share a name. `specs()` is what the servers listed last, so a list
    change a server announces reaches the next model turn. A name keeps its owner: a tool a
    server lists later under a name another server or a local tool has is left out.
    """

    def __init__(self, local: ToolHost, servers: Iterable[MCPServer]) -> None:
        self.local = local
        self.servers = list(servers)
        seen: dict[str, MCPServer] = {}
        for server in self.servers:
            if server.name in seen:
                raise ValueError(f"two MCP servers are named {server.name!r}")
            seen[server.name] = server
        self._owner: dict[str, MCPServer] = {}
        self._settled = False  # whether a start has checked every name
        self._told: set[tuple[str, str, str]] = set()  # collisions logged: name, owner, server
        for server in self.servers:
            server.on_listed(self._reindex)

    async def start(self) -> None:
        """Start the servers not running, then index the tool names (ToolNameCollision at
        the first start; afterwards a newcomer to a name is left out, with a warning)."""
        for server in self.servers:
            await server.start()
        self._owner = self._index(strict=not self._settled)
        self._settled = True

    def _reindex(self) -> None:
        # A listing that arrives mid-run. Before the first start has checked the names (and
        # nothing is routed yet), that start indexes them once every server is up.
        if self._settled:
            self._owner = self._index(strict=False)

    def _index(self, *, strict: bool) -> dict[str, MCPServer]:
        # Ownership is kept, not rebuilt in server order: otherwise a server listed first
        # could add a tool named like another server's and receive that tool's calls.
        local = {s["name"] for s in self.local.specs()}
        listed = {server.name: set(server.names()) for server in self.servers}
        owner = {
            name: server
            for name, server in self._owner.items()
            if name in listed.get(server.name, ()) and name not in local
        }
        for server in self.servers:
            for name in server.names():
                other = owner.get(name)
                if other is server:
                    continue
                if name in local or other is not None:
                    first = f"MCP server {other.name!r}" if other else "a local tool"
                    clash = ToolNameCollision(name, first, f"MCP server {server.name!r}")
                    if strict:
                        raise clash
                    if (name, first, server.name) not in self._told:  # once, not per listing
                        self._told.add((name, first, server.name))
                        _log.warning(
                            "%s; the later tool (of %r) is not offered", clash, server.name
                        )
                    continue
                owner[name] = server
        return owner

    # ----------------------------------------------------------------- ToolHost

    def specs(self) -> list[ToolSpec]:
        """Local specs, then each server's in order."""
        out = self.local.specs()
        for name, server in self._owner.items():
            spec = server.spec(name)
            if spec is not None:
                out.append(spec.copy())
        return out

    def spec(self, name: str) -> ToolSpec | None:
        """One tool's spec, local or remote, or None."""
        server = self._owner.get(name)
        if server is None:
            return self.local.spec(name)
        spec = server.spec(name)
        return None if spec is None else spec.copy()

    def received_args(self, call: ToolCall) -> dict[str, Any] | None:
        """A local tool's arguments as it will receive them; None for a server's tool (its
        arguments are checked against its schema and sent as they are)."""
        name = call.get("tool")
        if isinstance(name, str) and name in self._owner:
            return None
        reader = self.local
        return reader.received_args(call) if isinstance(reader, ArgumentReader) else None

    async def call(self, call: ToolCall, *, idempotency_key: str) -> ToolResult:
        """Route a call to its server, or to the local tools."""
        name = call.get("tool")
        server = self._owner.get(name) if isinstance(name, str) else None
        if server is None:
            return await self.local.call(call, idempotency_key=idempotency_key)
        args = call.get("args")
        if args is None:
            args = {}
        elif not isinstance(args, dict):
            return results.not_an_object(call["tool"], args)
        return await server.call(call["tool"], args, idempotency_key)

    async def close(self) -> None:
        """Stop every server and close the local tools."""
        for server in self.servers:
            await server.close()
        await self.local.close()

    # ----------------------------------------------------------------- add / remove

    def add(self, fn: Any) -> Any:
        """Register one more local tool (its name must not be a server tool's)."""
        name = getattr(fn, "name", None) or getattr(fn, "__name__", None)
        if name in self._owner:
            raise ToolNameCollision(name, f"MCP server {self._owner[name].name!r}", "a local tool")
        return cast(Any, self.local).add(fn)

    def provide(self, deps: Any) -> None:
        """Pass `tool_deps` on to the local tools."""
        cast(Any, self.local).provide(deps)

    def remove(self, name: str) -> None:
        """Unregister a local tool."""
        cast(Any, self.local).remove(name)
