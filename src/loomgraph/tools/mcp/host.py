"""`ServerToolHost`: an agent's local tools and its MCP servers' tools as one `ToolHost`."""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from collections.abc import Iterable
from typing import Any, cast

from loomgraph.errors import LoomgraphError
from loomgraph.protocols import (
    ArgumentChecker,
    ArgumentReader,
    TextSink,
    ToolCall,
    ToolHost,
    ToolResult,
    ToolSpec,
)
from loomgraph.protocols.messages import ToolOrigin
from loomgraph.tools import results
from loomgraph.tools.mcp.convert import SERVER_ERROR
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
    server lists later under a name another server or a local tool has is left out. A
    server's `prefix` + `_` is its own: another server's tool named under it is left out.
    What the model is shown of the tools of servers not trusted (names, descriptions and
    schemas: `shown_texts`) is untrusted text of every run that offers them
    (`watch_untrusted`). A server's tool specs name their origin
    (`ToolSpec.origin`: the server and a digest of how it is reached), which an approval of
    one of their calls is bound to.
    """

    def __init__(self, local: ToolHost, servers: Iterable[MCPServer]) -> None:
        self.local = local
        self.servers = list(servers)
        seen: dict[str, MCPServer] = {}
        for server in self.servers:
            if server.name in seen:
                raise ValueError(f"two MCP servers are named {server.name!r}")
            seen[server.name] = server
        self._prefixes = _prefixes(self.servers)
        # Computed once: a server is reached the same way for as long as it is configured.
        self._origins: dict[str, ToolOrigin] = {
            server.name: server.origin() for server in self.servers
        }
        self._owner: dict[str, MCPServer] = {}
        # Offered tools of servers not trusted -> their name, description and schema as text;
        # and the untrusted text of each run under way, which gets what is listed meanwhile.
        self._described: dict[str, tuple[str, ...]] = {}
        self._watchers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._settled = False  # whether a start has checked every name
        # Closed (its Agent's `aclose`): a run still under way sends no more calls to its
        # servers, which would start them again, never to be stopped.
        self._closed = False
        self._told: set[tuple[str, str, str]] = set()  # collisions logged: name, owner, server
        for server in self.servers:
            server.on_listed(self._reindex)

    async def start(self) -> None:
        """Start the servers not running, then index the tool names (ToolNameCollision at
        the first start; afterwards a newcomer to a name is left out, with a warning)."""
        self._closed = False  # (an Agent used again after aclose starts its servers again)
        for server in self.servers:
            server.hold(self)
            await server.start()
        self._owner = self._index(strict=not self._settled)
        self._settled = True

    def _reindex(self) -> None:
        # A listing that arrives mid-run. Before the first start has checked the names (and
        # nothing is routed yet), that start indexes them once every server is up.
        if self._settled:
            self._owner = self._index(strict=False)

    def _prefix_owner(self, name: str, server: MCPServer) -> MCPServer | None:
        """The other server whose prefix `name` is under, or None."""
        folded = name.casefold()
        for prefix, owner in self._prefixes.items():
            if owner is not server and folded.startswith(prefix):
                return owner
        return None

    def _index(self, *, strict: bool) -> dict[str, MCPServer]:
        # Ownership is kept, not rebuilt in server order: otherwise a server listed first
        # could add a tool named like another server's and receive that tool's calls.
        # Names are one tool's ignoring case, as deny rules read them: a server's `Transfer`
        # beside the local `transfer` is a lookalike a model or an approver may take for it.
        local = {s["name"].casefold() for s in self.local.specs()}
        listed = {server.name: set(server.names()) for server in self.servers}
        owner = {
            name: server
            for name, server in self._owner.items()
            if name in listed.get(server.name, ()) and name.casefold() not in local
        }
        taken = {name.casefold(): server for name, server in owner.items()}
        for server in self.servers:
            for name in server.names():
                other = taken.get(name.casefold())
                if other is server and name in owner:
                    continue
                squatted = self._prefix_owner(name, server)
                if squatted is not None:
                    # Rules name tools by glob (`allow: ["time_*"]`): a server cannot claim
                    # another's prefix and so its rules.
                    told = (name, f"prefix of {squatted.name}", server.name)
                    if told not in self._told:
                        self._told.add(told)
                        _log.warning(
                            "MCP server %r: tool %r is not offered: its name is under the "
                            "prefix %r of MCP server %r",
                            server.name,
                            name,
                            f"{squatted.prefix}_",
                            squatted.name,
                        )
                    continue
                if name.casefold() in local or other is not None:
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
                owner[name] = taken[name.casefold()] = server
        self._describe(owner)
        return owner

    # ----------------------------------------------------------------- untrusted text

    def _describe(self, owner: dict[str, MCPServer]) -> None:
        # What the model is told about the tools of servers not trusted is text those
        # servers wrote, as their results are: each run under way gets what is new.
        described: dict[str, tuple[str, ...]] = {}
        untrusted = [
            (name, spec)
            for name, server in owner.items()
            if not server.trust.trusted and (spec := server.spec(name)) is not None
        ]
        if untrusted:
            described = {name: shown_texts(spec) for name, spec in untrusted}
        new = [
            text
            for name, texts in described.items()
            if self._described.get(name) != texts
            for text in texts
        ]
        self._described = described
        if new:
            for watcher in list(self._watchers):
                for text in new:
                    watcher.add(text)

    def watch_untrusted(self, untrusted: TextSink) -> None:
        """Give a run's untrusted text (engine.taint.UntrustedText) the descriptions and
        schemas of the tools of servers not trusted offered now, and those listed while it
        is alive (it is held weakly)."""
        for texts in self._described.values():
            for text in texts:
                untrusted.add(text)
        self._watchers.add(untrusted)

    # ----------------------------------------------------------------- ToolHost

    def specs(self) -> list[ToolSpec]:
        """Local specs, then each server's in order."""
        out = self.local.specs()
        for name, server in self._owner.items():
            spec = server.spec(name)
            if spec is not None:
                stamped = spec.copy()
                stamped["origin"] = self._origins[server.name]
                out.append(stamped)
        return out

    def spec(self, name: str) -> ToolSpec | None:
        """One tool's spec, local or remote, or None."""
        server = self._owner.get(name)
        if server is None:
            return self.local.spec(name)
        spec = server.spec(name)
        if spec is None:
            return None
        # The copy names its origin: one dict item, made once per server, so an ordinary
        # call pays nothing for the identity an approval may be bound to.
        stamped = spec.copy()
        stamped["origin"] = self._origins[server.name]
        return stamped

    def received_args(self, call: ToolCall) -> dict[str, Any] | None:
        """A local tool's arguments as it will receive them; None for a server's tool (its
        arguments are checked against its schema and sent as they are)."""
        name = call.get("tool")
        if isinstance(name, str) and name in self._owner:
            return None
        reader = self.local
        return reader.received_args(call) if isinstance(reader, ArgumentReader) else None

    def argument_problem(self, call: ToolCall) -> str | None:
        """Why the call's tool would refuse its arguments, asked of its server (its schema
        check, as at the call: nothing is sent) or of the local tools; None when they fit."""
        name = call.get("tool")
        server = self._owner.get(name) if isinstance(name, str) else None
        if server is None:
            local = self.local
            return local.argument_problem(call) if isinstance(local, ArgumentChecker) else None
        args = results.call_args(call)
        if args is None:
            return results.not_an_object(call["tool"], call.get("args"))["content"]
        return server.argument_problem(call["tool"], args)

    async def call(self, call: ToolCall, *, idempotency_key: str) -> ToolResult:
        """Route a call to its server, or to the local tools."""
        name = call.get("tool")
        server = self._owner.get(name) if isinstance(name, str) else None
        if server is None:
            return await self.local.call(call, idempotency_key=idempotency_key)
        args = results.call_args(call)
        if args is None:
            return results.not_an_object(call["tool"], call.get("args"))
        if self._closed:
            return ToolResult(
                content=f"MCP server {server.name!r}: its agent was closed (aclose) while this "
                "run went on; the call was not sent",
                is_error=True,
                error_type=SERVER_ERROR,
            )
        return await server.call(call["tool"], args, idempotency_key)

    async def close(self) -> None:
        """Let go of every server (side by side: each is stopped unless another Agent's
        tools still use it) and close the local tools."""
        # Side by side: each server's close is bounded (connection.CLOSE_TIMEOUT), and so is
        # the agent's, rather than by their sum.
        self._closed = True
        try:
            await asyncio.gather(*(server.release(self) for server in self.servers))
        finally:
            await self.local.close()

    # ----------------------------------------------------------------- add / remove

    def add(self, fn: Any) -> Any:
        """Register one more local tool (its name must not be a server tool's, in any case:
        `transfer` beside a server's `Transfer` is one name, as the rules read it)."""
        name = getattr(fn, "name", None) or getattr(fn, "__name__", None)
        if isinstance(name, str):
            folded = name.casefold()
            for listed, server in self._owner.items():
                if listed.casefold() == folded:
                    raise ToolNameCollision(name, f"MCP server {server.name!r}", "a local tool")
        return cast(Any, self.local).add(fn)

    def provide(self, deps: Any) -> None:
        """Pass `tool_deps` on to the local tools."""
        cast(Any, self.local).provide(deps)

    def remove(self, name: str) -> None:
        """Unregister a local tool."""
        cast(Any, self.local).remove(name)


def _prefixes(servers: list[MCPServer]) -> dict[str, MCPServer]:
    """Each prefixed server's `prefix_`, case folded; ValueError when one is the start of
    another's (two servers cannot both own a name)."""
    owned: dict[str, MCPServer] = {}
    for server in servers:
        if server.prefix is None:
            continue
        # Ignoring case, as deny rules read tool names (`TIME_x` is under `time_`).
        mine = f"{server.prefix}_".casefold()
        for theirs, other in owned.items():
            if mine.startswith(theirs) or theirs.startswith(mine):
                raise ValueError(
                    f"MCP servers {other.name!r} and {server.name!r} have overlapping tool "
                    f"prefixes {f'{other.prefix}_'!r} and {f'{server.prefix}_'!r}: give each "
                    "a prefix of its own"
                )
        owned[mine] = server
    return owned


def shown_texts(spec: ToolSpec) -> tuple[str, ...]:
    """The text of a tool spec the model is shown: its name, its description, and every key
    and value of its schema at any depth but the standard JSON Schema keywords used as keys."""
    # The schema goes to the model as it is, so any string in it may be an instruction: a
    # `$defs` name, an unknown keyword, the `$schema` value, a parameter named `type`. Only
    # keys that are keywords are left out, being the words every schema has. Numbers count as
    # the taint check reads a call's: as their decimal text (an account number as an example).
    # Nothing is cut out of it: a call's keys that are its tool's own parameter names are what
    # the taint check leaves out (`taint.parameter_names`), so a server's names can no more
    # erase its words than they make every call look tainted.
    found: list[str] = [spec["name"], spec["description"]]
    todo: list[Any] = [spec["parameters"]]
    while todo:  # not recursive: a schema may be nested deeply
        node = todo.pop()
        if isinstance(node, str):
            found.append(node)
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, int | float):
            found.append(_number(node))
        elif isinstance(node, list):
            todo.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key not in SCHEMA_KEYWORDS:
                    found.append(key)
                todo.append(value)
    texts = (text for text in found if isinstance(text, str) and text.strip())
    return tuple(dict.fromkeys(texts))  # each once: every text is cut into pieces later


def _number(value: int | float) -> str:
    """A number as the taint check reads one in a call (`taint.values_in`)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return str(int(value)) if value.is_integer() else repr(value)
    try:
        return str(value)
    except ValueError:  # more digits than Python converts to text
        return ""


SCHEMA_KEYWORDS = frozenset(
    {
        # core (and the drafts' older spellings)
        *("$schema", "$id", "id", "$ref", "$anchor", "$dynamicRef", "$dynamicAnchor"),
        *("$recursiveRef", "$recursiveAnchor", "$vocabulary", "$comment", "$defs"),
        "definitions",
        # applicators
        *("allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas"),
        *("prefixItems", "items", "additionalItems", "contains", "properties"),
        *("patternProperties", "additionalProperties", "propertyNames", "dependencies"),
        *("unevaluatedItems", "unevaluatedProperties", "extends", "disallow"),
        # validation
        *("type", "enum", "const", "multipleOf", "divisibleBy", "maximum", "minimum"),
        *("exclusiveMaximum", "exclusiveMinimum", "maxLength", "minLength", "pattern"),
        *("maxItems", "minItems", "uniqueItems", "maxContains", "minContains"),
        *("maxProperties", "minProperties", "required", "dependentRequired"),
        # annotations, formats and contents
        *("title", "description", "default", "deprecated", "readOnly", "writeOnly"),
        *("examples", "format", "contentEncoding", "contentMediaType", "contentSchema"),
    }
)
"""The keywords of JSON Schema (drafts 3 to 2020-12): as keys, they are not a server's words."""
