"""Tool results: return values as text, and every failure as an error the model can read."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any, Final, Literal

from pydantic import BaseModel, ValidationError
from pydantic_core import SchemaSerializer, core_schema, to_jsonable_python

from loomgraph.protocols import INVALID_ARGUMENTS, ToolResult, escaped, storable
from loomgraph.tools.json_schema import JsonArgumentsInvalid

ToolErrorType = Literal[
    "unknown_tool",
    "invalid_arguments",
    "tool_exception",
    "timeout",
    "unavailable",
    "mcp_server_error",
]
"""The `error_type` values of error results (`unavailable`: too many of the tool's calls
still run past their limit; `mcp_server_error`: an MCP server failed)."""

UNKNOWN_TOOL: Final = "unknown_tool"
TOOL_EXCEPTION: Final = "tool_exception"
TIMEOUT: Final = "timeout"
UNAVAILABLE: Final = "unavailable"

_MAX_INPUT_REPR = 80


def to_content(value: Any) -> str:
    """The text the model sees for a tool's return value: a `str` as it is, anything else as
    JSON the way pydantic's JSON mode writes it (models by their aliases, enums as their value,
    sets as arrays, dates in ISO 8601, NaN and infinities as null, each bytes value as UTF-8
    text or else standard base64), other objects as `str(value)`. A lone surrogate or NUL is
    written as its visible escape (`escaped`), so the text can always be sent and stored."""
    if isinstance(value, str):
        # storable() first: two C-level checks for most results, a call less than escaped()
        return value if storable(value) else escaped(value)
    try:  # _jsonable inlined: the common result pays one call less
        data = to_jsonable_python(value, by_alias=True, inf_nan_mode="null", fallback=_fallback)
    except _UNWRITABLE:  # only the rare result pays for taking it apart
        data = _apart(value, set())
    # A model alone keeps the compact form model_dump_json gave it before; its data is the
    # same as anywhere else (one conversion, by alias). The type checks spare a plain dict
    # or list the isinstance of BaseModel (an ABC: the slowest check here).
    compact = type(data) in _PLAIN and type(value) not in _PLAIN and isinstance(value, BaseModel)
    text = (_COMPACT if compact else _ENCODER).encode(data)
    # JSON writes NUL as \u0000 but a lone surrogate raw (ensure_ascii=False); its escape
    # `\udcff` is a JSON escape too, so the text stays JSON of the same value. isascii() is
    # O(1): what the common result pays for the check.
    return text if text.isascii() else escaped(text)


def _jsonable(value: Any) -> Any:
    # by_alias=True for a model alone and a nested one alike (and pydantic_core's default):
    # the spelling the tools' argument schemas use. Bytes in utf8 mode: that failing on one
    # value sends the result through `_apart`, never base64 for all.
    return to_jsonable_python(value, by_alias=True, inf_nan_mode="null", fallback=_fallback)


# What pydantic's JSON mode cannot write as it is: bytes that are not UTF-8 (decode), a dict
# key with a lone surrogate (encode; a str value with one passes).
_UNWRITABLE: Final = (UnicodeDecodeError, UnicodeEncodeError)
_CONTAINERS: Final = (dict, list, tuple, set, frozenset)
_PLAIN: Final = (dict, list)


def _apart(value: Any, path: set[int]) -> Any:
    """`value`, which pydantic's JSON mode could not write, as JSON data: taken apart down to
    what it can, with each bytes value made text on its own (`_bytes_text`) and str keys kept
    as they are. `path` holds the values being taken apart: a cycle is an error, not endless
    recursion."""
    if isinstance(value, bytes | bytearray):
        return _bytes_text(value)
    if id(value) in path:
        raise ValueError("Circular reference detected (the value contains itself)")
    path.add(id(value))
    try:
        if isinstance(value, dict):
            return {_key(key): _part(item, path) for key, item in value.items()}
        if isinstance(value, _CONTAINERS):
            return [_part(item, path) for item in value]
        # A model or dataclass (a model's ser_json_bytes wins over bytes_mode): its fields as
        # pydantic's python mode gives them, by alias, bytes kept as bytes.
        fields = _PYTHON.to_python(value, mode="python", by_alias=True)
        if fields is value or not isinstance(fields, (*_CONTAINERS, bytes, bytearray)):
            # A generator, say: the failed conversion has consumed part of it already.
            raise TypeError(
                f"a {type(value).__name__} holds bytes that are not UTF-8 or a dict key with a "
                "lone surrogate, and cannot be taken apart to convert them: return a list, a "
                "dict or a model instead"
            )
        return _apart(fields, path)
    finally:
        path.discard(id(value))


def _part(value: Any, path: set[int]) -> Any:
    try:
        return _jsonable(value)
    except _UNWRITABLE:
        return _apart(value, path)


def _key(key: Any) -> str:
    """A dict key as JSON writes it: bytes as `_bytes_text`, str as it is, others as pydantic
    writes them (`(1, 2)` → `"1,2"`)."""
    if isinstance(key, str):
        return key
    if isinstance(key, bytes | bytearray):
        return _bytes_text(key)
    (written,) = _jsonable({key: None})
    return str(written)


def _bytes_text(data: bytes | bytearray) -> str:
    """UTF-8 bytes as their text, others as base64 in the standard alphabet (`+/`)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii")


def _fallback(value: Any) -> Any:
    # What pydantic cannot serialize (a generator, an object of no known type): its text.
    return _text(value)


def _text(value: object) -> str:
    """`str(value)`; its repr, or its type's name, when that fails or is not a string."""
    for show in (str, repr):
        try:
            text = show(value)
        except Exception:  # a broken __str__ is the object's, not ours
            continue
        if isinstance(text, str):
            return text
    return f"<{type(value).__name__} object>"


# One encoder for all calls: json.dumps with options builds a new one each time. It is only
# given plain JSON values (to_jsonable_python's), so allow_nan=False cannot fail on a
# tool's NaN (made null before) and never writes invalid JSON.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)
_COMPACT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
# Serializes any value by inference; only its python mode is used (see `_each_bytes`).
_PYTHON = SchemaSerializer(core_schema.any_schema())


def success(value: Any) -> ToolResult:
    """The result of a call that returned `value`."""
    return {"content": to_content(value), "is_error": False}


def error(error_type: str, content: str) -> ToolResult:
    """An error result; its content escaped as a result's is (an exception's message may
    hold a file name with a lone surrogate)."""
    return {"content": escaped(content), "is_error": True, "error_type": error_type}


def unknown_tool(name: object, available: Iterable[str]) -> ToolResult:
    """The model called a tool that does not exist."""
    names = ", ".join(available)
    listing = f"Available tools: {names}." if names else "No tools are available."
    return error(UNKNOWN_TOOL, f"Unknown tool {name!r}. {listing}")


def not_a_call(call: object, available: Iterable[str]) -> ToolResult:
    """What was handed over as a tool call is no mapping of a `tool` and its `args`."""
    names = ", ".join(available) or "none"
    return error(
        UNKNOWN_TOOL,
        f"Not a tool call: a tool call is a mapping with a `tool` name and its `args`, not "
        f"{type(call).__name__}. Available tools: {names}.",
    )


def call_args(call: Any) -> dict[str, Any] | None:
    """A call's arguments as the dict its tool is checked against (no input at all, as some
    models send for a tool without parameters, is `{}`); None when they are not an object
    (`not_an_object` says so)."""
    args = call.get("args")
    if args is None:
        return {}
    return args if isinstance(args, dict) else None


def not_an_object(tool: str, args: object) -> ToolResult:
    """The arguments were not a JSON object."""
    return error(
        INVALID_ARGUMENTS,
        f"Invalid arguments for tool {tool!r}: expected a JSON object of named arguments, "
        f"got {_json_type(args)}.",
    )


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def invalid_arguments(tool: str, exc: Exception) -> ToolResult:
    """The arguments failed validation; one line per bad field, saying why."""
    if isinstance(exc, JsonArgumentsInvalid):
        return error(INVALID_ARGUMENTS, f"Invalid arguments for tool {tool!r}:{exc}")
    if isinstance(exc, ValidationError):
        try:
            return error(INVALID_ARGUMENTS, _problems(tool, exc))
        except Exception:  # a user validator's error that cannot be shown
            pass
    return error(INVALID_ARGUMENTS, f"Invalid arguments for tool {tool!r}: {_describe(exc)}")


def _problems(tool: str, exc: ValidationError) -> str:
    lines = [f"Invalid arguments for tool {tool!r}:"]
    for problem in exc.errors(include_url=False):
        where = _location(problem["loc"])
        if problem["type"] == "extra_forbidden":
            lines.append(f"- {where}: unexpected argument; this tool has no such parameter")
            continue
        line = f"- {where}: {problem['msg']}"
        if problem["type"] != "missing" and problem["loc"]:
            shown = repr(problem["input"])
            if len(shown) > _MAX_INPUT_REPR:
                shown = shown[: _MAX_INPUT_REPR - 3] + "..."
            line += f" (got {shown})"
        lines.append(line)
    return "\n".join(lines)


def _location(loc: tuple[int | str, ...]) -> str:
    """`("items", 0, "name")` → `items[0].name`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(arguments)"


def tool_exception(exc: BaseException) -> ToolResult:
    """The tool raised `exc`."""
    return error(TOOL_EXCEPTION, _describe(exc))


def _describe(exc: BaseException) -> str:
    """`ExcType: message`, or only the type when there is no message. Never raises: an
    exception whose `__str__` raises or returns no string is shown by its repr, or its type."""
    name = type(exc).__name__
    try:
        message = str(exc)
    except Exception:  # __str__ raised, or returned no string
        message = _text(exc)
    return f"{name}: {message}" if message else name


def not_serializable(exc: BaseException) -> ToolResult:
    """The tool ran and returned, but its value could not be made text."""
    return error(
        TOOL_EXCEPTION,
        f"{_describe(exc)} (the tool ran and returned, but its return value could not be "
        "converted to text: do not call it again only to see the value)",
    )


def timed_out(tool: str, seconds: float) -> ToolResult:
    """The tool did not finish within its timeout."""
    return error(TIMEOUT, f"Tool {tool!r} timed out after {seconds:g} seconds.")


def unavailable(tool: str, strays: int) -> ToolResult:
    """The tool was not called: `strays` of its calls still run past their limit."""
    return error(
        UNAVAILABLE,
        f"Tool {tool!r} is unavailable: {strays} earlier calls passed their time limit and "
        "are still running. Try again later or use another tool.",
    )
