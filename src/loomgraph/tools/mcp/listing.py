"""Which of the tools an MCP server listed are offered to the model, under which names, with
which checked schemas: `Offer`, built anew from every listing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from loomgraph.protocols import ToolSpec
from loomgraph.tools.mcp.checks import NAME, Schema
from loomgraph.tools.mcp.connection import MCPListingTooLarge
from loomgraph.tools.mcp.convert import Trust, to_spec
from loomgraph.tools.schema_defs import ToolSchemaNotJSON, json_chars, spec_chars

_log = logging.getLogger(__name__)


class _Lister(Protocol):
    """What an offer needs of its `MCPServer`."""

    name: str
    prefix: str | None
    trust: Trust
    max_tool_chars: int
    max_listing_chars: int


@dataclass(frozen=True, slots=True)
class Offer:
    """The tools offered from one listing, by exposed name."""

    specs: dict[str, ToolSpec] = field(default_factory=dict)
    original: dict[str, str] = field(default_factory=dict)  # -> the server's own name
    schemas: dict[str, Schema] = field(default_factory=dict)  # -> its checked inputSchema
    outputs: dict[str, Schema] = field(default_factory=dict)  # -> its outputSchema, if any


def offer(server: _Lister, listing: Sequence[Any], before: Offer) -> Offer:
    """The offer of a listing (the mcp Tools, as listed); raises MCPListingTooLarge. Schemas
    unchanged since `before` are not compiled again."""
    tools = _by_name(server.name, listing)
    listed: dict[str, tuple[str, ToolSpec]] = {}
    total = 0
    for tool_name, item in tools.items():
        exposed = f"{server.prefix}_{tool_name}" if server.prefix else tool_name
        # Held to the rule local tool names meet: what a model API takes, and nothing that
        # looks like another name (a separator, a look-alike letter).
        if not NAME.fullmatch(exposed):
            leave_out(server.name, exposed, "its name is not 1-64 letters, digits, '_' or '-'")
            continue
        spec = to_spec(item, exposed, server.trust)
        try:
            size = spec_chars(spec)  # before its schemas are compiled: that takes time
        except ToolSchemaNotJSON as exc:  # NaN, lone surrogates: no model request holds it
            leave_out(server.name, exposed, str(exc))
            continue
        if item.output_schema is not None:
            size += json_chars(exposed, item.output_schema)
        if size > server.max_tool_chars:
            problem = (
                f"its description and schemas take more than {server.max_tool_chars:,} "
                "characters (MCPServer.max_tool_chars)"
            )
            leave_out(server.name, exposed, problem)
            continue
        total += size
        listed[exposed] = (tool_name, spec)
    if total > server.max_listing_chars:
        problem = (
            f"its tools' descriptions and schemas take more than "
            f"{server.max_listing_chars:,} characters (MCPServer.max_listing_chars)"
        )
        raise MCPListingTooLarge(server.name, problem)
    made = Offer()
    for exposed, (tool_name, spec) in listed.items():
        shape = tools[tool_name].output_schema
        try:
            schema = Schema.of(spec["parameters"], "inputSchema", before.schemas.get(exposed))
            if shape is not None:
                output = Schema.of(shape, "outputSchema", before.outputs.get(exposed))
                made.outputs[exposed] = output
        except ValueError as exc:
            leave_out(server.name, exposed, str(exc))
            continue
        made.specs[exposed], made.original[exposed], made.schemas[exposed] = (
            spec,
            tool_name,
            schema,
        )
    return made


def _by_name(server: str, listing: Sequence[Any]) -> dict[str, Any]:
    # Two different tools of one name: which one a call reaches is the server's choice, and
    # the model would be shown one of them. Neither is offered. (The same tool listed twice,
    # on two pages say, is one tool.)
    # Names that differ only in case are one name here, as deny rules read them: `Transfer`
    # beside `transfer` is a lookalike a model or an approver may take for the other.
    tools: dict[str, Any] = {}
    clashes: dict[str, int] = {}
    spellings: dict[str, set[str]] = {}
    for item in listing:
        folded = item.name.casefold()
        spellings.setdefault(folded, set()).add(item.name)
        known = tools.setdefault(folded, item)
        if known is not item and known != item:
            clashes[folded] = clashes.get(folded, 1) + 1
    for folded, count in clashes.items():
        names = sorted(spellings[folded])
        del tools[folded]
        why = f"the server lists {count} different tools of this name"
        if len(names) > 1:
            why = f"the server lists {count} different tools named {', '.join(map(repr, names))}"
        for name in names:
            leave_out(server, name, why)
    return {item.name: item for item in tools.values()}


def leave_out(server: str, tool: str, why: str) -> None:
    """Log that `server`'s `tool` is not offered, and why (a long name is shortened)."""
    shown = repr(tool) if len(tool) <= 100 else f"{tool[:100]!r}... ({len(tool)} characters)"
    _log.warning("MCP server %r: tool %s is not offered: %s", server, shown, why)
