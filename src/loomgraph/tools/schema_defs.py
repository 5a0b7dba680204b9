"""A pydantic JSON Schema made what the model is shown: `$defs` inlined where that keeps it
small, titles dropped, an object shape; and the errors for what cannot be shown (strict JSON
only, defaults their own type accepts)."""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from enum import Enum
from typing import Any

from loomgraph.errors import LoomgraphError
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
# Strict: a bare NaN or Infinity is not JSON, and a model API refuses the whole request.
_STRICT = json.JSONEncoder(ensure_ascii=False, allow_nan=False)

Path = tuple[str | int, ...]


class DefaultProblem(Enum):
    """Why a tool parameter's default is refused."""

    TYPE = "its own type refuses"  # `n: Annotated[int, Field(ge=1)] = 0`
    NOT_JSON = "JSON cannot carry"  # `limit: float = inf`, `payload: bytes = b"\\xff"`


_REMEDY = {
    DefaultProblem.TYPE: "the model would be shown that default: change the default or the type",
    DefaultProblem.NOT_JSON: "the model is shown every default in the tool's JSON Schema, "
    "which goes into every model request: use a default JSON can carry (a finite number, "
    "UTF-8 text; None, typed `X | None`, for no limit)",
}


class ToolDefaultInvalid(LoomgraphError, ValueError):
    """A tool parameter's default that its own type or constraints refuse (`n: Annotated[int,
    Field(ge=1)] = 0`), or that JSON cannot carry (`limit: float = inf`): the model would be
    shown it as the default, and get it when it sends nothing. Raised when the tool is
    defined."""

    def __init__(
        self,
        tool: str,
        parameter: str,
        default: Any,
        problem: str,
        kind: DefaultProblem = DefaultProblem.TYPE,
    ) -> None:
        super().__init__(
            f"tool {tool!r}: parameter {parameter!r} defaults to {shown(default)}, which "
            f"{kind.value} ({problem}); {_REMEDY[kind]}"
        )
        self.tool = tool
        self.parameter = parameter
        self.default = default
        self.problem = problem
        self.kind = kind


class ToolSchemaNotJSON(LoomgraphError, ValueError):
    """A tool's name, description or parameters hold what JSON cannot carry (inf or NaN, text
    that is not UTF-8, a set, ...): they go into every model request, which would fail.
    Raised when a local tool is defined and when an MCP server lists one."""

    def __init__(
        self, tool: str, path: Path, value: Any, problem: str, parameter: str | None = None
    ) -> None:
        named = f"parameter {parameter!r}: its JSON Schema" if parameter else "its spec"
        super().__init__(
            f"tool {tool!r}: {named} holds {shown(value)} at {json_path(path)}, which JSON "
            f"cannot carry ({problem}); the spec goes into every model request, which would "
            "fail: use JSON values only (finite numbers, UTF-8 text, lists, objects)"
        )
        self.tool = tool
        self.path = path
        self.value = value
        self.problem = problem
        self.parameter = parameter


def shown(value: Any, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters, for messages (an int too long to write reads
    as its digit count: its repr raises, as does that of what holds one)."""
    try:
        text = repr(value)
    except ValueError:
        if isinstance(value, int):
            return f"<an int of about {int(value.bit_length() * math.log10(2))} digits>"
        return f"<a {type(value).__name__} holding an int too long to write>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_path(path: Path) -> str:
    """`path` as it reads in messages: `parameters.properties.limit.default`, `anyOf[0]`."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)
    return text.removeprefix(".") or "the top"


def spec_chars(spec: ToolSpec) -> int:
    """What one tool adds to every model request: its name, description and parameters, as
    strict JSON characters; ToolSchemaNotJSON for anything JSON cannot carry."""
    sent = {
        "name": spec["name"],
        "description": spec["description"],
        "parameters": spec["parameters"],
    }
    return json_chars(spec["name"], sent)


def json_chars(tool: str, value: Any, root: Path = ()) -> int:
    """The length of `value` as strict JSON text (UTF-8, no NaN or Infinity); raises
    ToolSchemaNotJSON naming where in it (`root` first) the first value JSON cannot carry is."""
    try:
        text = _STRICT.encode(value)
        text.encode("utf-8")  # a lone surrogate encodes to JSON text, but not to UTF-8 bytes
    except RecursionError:
        return sys.maxsize  # nested deeper than anything can be sent
    except (ValueError, TypeError) as exc:
        found = not_json(value)
        if found is None:  # the walk knows every rule json.dumps has: kept in case one differs
            raise ToolSchemaNotJSON(tool, root, value, f"{type(exc).__name__}: {exc}") from exc
        path, culprit, problem = found
        raise ToolSchemaNotJSON(tool, root + path, culprit, problem) from None
    return len(text)


def not_json(value: Any) -> tuple[Path, Any, str] | None:
    """The first part of `value` (in document order) that strict JSON cannot carry, as
    (path, the value, why), or None. A loop, not recursion: a schema may be deep."""
    todo: list[tuple[Path, Any]] = [((), value)]
    while todo:
        path, item = todo.pop()
        problem = _scalar_problem(item)
        if problem is not None:
            return path, item, problem
        if isinstance(item, dict):
            for key in item:
                problem = _key_problem(key)
                if problem is not None:
                    return path, key, f"a key: {problem}"
            todo.extend(((*path, str(key)), sub) for key, sub in reversed(item.items()))
        elif isinstance(item, list | tuple):
            todo.extend(((*path, index), sub) for index, sub in reversed(list(enumerate(item))))
    return None


def _scalar_problem(item: Any) -> str | None:
    """Why strict JSON cannot carry `item` itself (its parts are looked at apart), or None."""
    if item is None or isinstance(item, bool | dict | list | tuple):
        return None
    if isinstance(item, float):
        return None if math.isfinite(item) else f"{item!r} is not a JSON number"
    if isinstance(item, int):
        try:
            int.__repr__(item)
        except ValueError:  # past sys.get_int_max_str_digits(): json.dumps cannot write it
            return f"an integer of more than {sys.get_int_max_str_digits()} digits"
        return None
    if isinstance(item, str):
        try:
            item.encode("utf-8")
        except UnicodeEncodeError:
            return "text with a lone surrogate, which is not UTF-8"
        return None
    return f"a {type(item).__name__} is not a JSON value"


def _key_problem(key: Any) -> str | None:
    """Why `key` cannot be a JSON object's key (json.dumps writes str, int, float, bool and
    None keys as text), or None."""
    if key is None or isinstance(key, str | int | float):
        return _scalar_problem(key)
    return f"a {type(key).__name__} is not a JSON object key"


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
