"""A pydantic JSON Schema made what the model is shown: `$defs` inlined where that keeps it
small, titles dropped, an object shape."""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

from loomgraph.protocols import ToolSpec

MAX_TOOL_CHARS = 50_000
"""The most JSON characters a tool's name, description and parameters may take: they go into
every model request. A local tool past it is refused when defined; an MCP tool past it is not
offered (`MCPServer.max_tool_chars` starts from this value)."""

INLINE_GROWTH = 2
"""`$defs` are inlined unless that would make the schema more than this many times as long:
then a definition used more than once keeps its `$ref` (a model of models of models, each
used twice, would double at every level)."""

# Keys whose values are data, not schemas: never strip a `title` or follow a `$ref` in them.
_DATA_KEYS = frozenset({"default", "enum", "const", "examples", "example"})
# Keys whose values map names to schemas: the names are not schema keywords.
_NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
_DEFS_PREFIX = "#/$defs/"


def spec_chars(spec: ToolSpec) -> int:
    """What one tool adds to every model request: its name, description and parameters, as
    JSON characters."""
    shown = {
        "name": spec["name"],
        "description": spec["description"],
        "parameters": spec["parameters"],
    }
    try:
        return len(json.dumps(shown, ensure_ascii=False))
    except RecursionError:
        return sys.maxsize  # nested deeper than anything can be sent


def clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline `$defs` (keeping recursive ones, and, when inlining would grow the schema past
    `INLINE_GROWTH` times, those used more than once), drop titles, ensure an object shape."""
    defs: dict[str, Any] = schema.get("$defs", {})
    keep: set[str] = set()
    if defs:
        uses = Counter(_refs(schema))
        if _inlined_chars(schema, defs) > INLINE_GROWTH * len(json.dumps(schema)):
            keep = {name for name, count in uses.items() if count > 1 and name in defs}
    needed: set[str] = set()

    def walk(node: Any, expanding: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [walk(item, expanding) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEFS_PREFIX):
            name = ref[len(_DEFS_PREFIX) :]
            if name in expanding or name in keep:
                needed.add(name)  # recursive, or kept: leave the reference
            elif name in defs:
                target = walk(defs[name], expanding | {name})
                siblings = walk({k: v for k, v in node.items() if k != "$ref"}, expanding)
                return {**target, **siblings}
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "title" and isinstance(value, str):
                continue  # titles are derived from names and only cost tokens
            if key == "$defs":
                continue
            if key in _DATA_KEYS:
                out[key] = value
            elif key == "discriminator" and isinstance(value, dict):
                out[key] = _discriminator(value, keep)
            elif key in _NAMED_SCHEMAS and isinstance(value, dict):
                out[key] = {name: walk(sub, expanding) for name, sub in value.items()}
            else:
                out[key] = walk(value, expanding)
        return out

    result: dict[str, Any] = walk(schema, frozenset())
    kept: dict[str, Any] = {}
    while pending := needed - kept.keys():
        for name in sorted(pending):
            kept[name] = walk(defs[name], frozenset({name}))
    if kept:
        result["$defs"] = kept
    result["type"] = "object"
    result.setdefault("properties", {})
    return result


def _discriminator(value: dict[str, Any], keep: set[str]) -> dict[str, Any]:
    """A discriminator without mapping entries to definitions that were inlined (their
    `$ref`s would point at nothing); the `oneOf` it annotates still says everything."""
    mapping = value.get("mapping")
    if not isinstance(mapping, dict):
        return value
    left = {
        tag: ref
        for tag, ref in mapping.items()
        if isinstance(ref, str)
        and ref.startswith(_DEFS_PREFIX)
        and ref[len(_DEFS_PREFIX) :] in keep
    }
    out = {k: v for k, v in value.items() if k != "mapping"}
    if left:
        out["mapping"] = left
    return out


def _refs(node: Any) -> list[str]:
    """The definition names of every `$ref` in `node` (a loop: a schema may be deep)."""
    names: list[str] = []
    todo = [node]
    while todo:
        item = todo.pop()
        if isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith(_DEFS_PREFIX):
                names.append(ref[len(_DEFS_PREFIX) :])
            todo.extend(v for k, v in item.items() if k not in _DATA_KEYS)
    return names


def _inlined_chars(schema: dict[str, Any], defs: dict[str, Any]) -> int:
    """About how long `schema` would be with every definition inlined (a recursive one
    counted once), without building it."""
    own = {name: len(json.dumps(body)) for name, body in defs.items()}
    refs = {name: _refs(body) for name, body in defs.items()}
    sizes: dict[str, int] = {}

    def size(name: str, expanding: frozenset[str]) -> int:
        if name in sizes:
            return sizes[name]
        total = own[name]
        for sub in refs[name]:
            if sub in defs and sub not in expanding:
                total += size(sub, expanding | {name})
        sizes[name] = total
        return total

    root = {k: v for k, v in schema.items() if k != "$defs"}
    return len(json.dumps(root)) + sum(
        size(name, frozenset()) for name in _refs(root) if name in defs
    )
