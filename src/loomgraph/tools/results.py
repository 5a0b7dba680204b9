"""Tool results: return values as text, and every failure as an error the model can read."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final, Literal

from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from loomgraph.protocols import INVALID_ARGUMENTS, ToolResult
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
    JSON the way pydantic's JSON mode writes it (enums as their value, sets as arrays, dates
    in ISO 8601, NaN and infinities as null, bytes as text or else base64), other objects
    as `str(value)`."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        data = to_jsonable_python(value, inf_nan_mode="null", fallback=_fallback)
    except UnicodeDecodeError:  # bytes that are not UTF-8 text: base64, as pydantic can
        data = to_jsonable_python(
            value, inf_nan_mode="null", fallback=_fallback, bytes_mode="base64"
        )
    return _ENCODER.encode(data)


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


def success(value: Any) -> ToolResult:
    """The result of a call that returned `value`."""
    return {"content": to_content(value), "is_error": False}


def error(error_type: str, content: str) -> ToolResult:
    """An error result."""
    return {"content": content, "is_error": True, "error_type": error_type}


def unknown_tool(name: object, available: Iterable[str]) -> ToolResult:
    """The model called a tool that does not exist."""
    names = ", ".join(available)
    listing = f"Available tools: {names}." if names else "No tools are available."
    return error(UNKNOWN_TOOL, f"Unknown tool {name!r}. {listing}")


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
