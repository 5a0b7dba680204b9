"""Tool-call arguments from a model, parsed with limits before anything else sees them.

A model's tool input is untrusted text. Parsed naively, a 1000-deep nested array raises
`RecursionError` (in the JSON decoder, or later in whatever walks the value), and a 5 MB
string is handed to permission checks, hooks, the journal and the tool. `parse_tool_args`
checks size and nesting depth on the raw text without recursing, parses it, and checks every
string and key; each violation is a `ToolArgsRejected` (a `ValueError`) naming where it is.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from loomgraph.errors import LoomgraphError

__all__ = ["ToolArgLimits", "ToolArgsRejected", "check_tool_args", "parse_tool_args"]


@dataclass(frozen=True, slots=True)
class ToolArgLimits:
    """How big and how deep one tool call's arguments may be."""

    max_depth: int = 32  # objects and arrays nested in the arguments object (which is 1)
    max_string_chars: int = 1_000_000  # one string value or key
    max_total_chars: int = 4_000_000  # the whole JSON text


DEFAULT_LIMITS = ToolArgLimits()
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class ToolArgsRejected(LoomgraphError, ValueError):
    """A tool call's arguments are not a JSON object within the limits; `where` is a JSON path."""

    def __init__(self, problem: str, where: str = "$") -> None:
        super().__init__(f"tool arguments at {where}: {problem}")
        self.problem = problem
        self.where = where


def parse_tool_args(raw: str, limits: ToolArgLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The arguments object in `raw`, or ToolArgsRejected; `{}` for empty text."""
    text = raw.strip()
    if not text:
        return {}
    if len(text) > limits.max_total_chars:
        raise ToolArgsRejected(
            f"{len(text)} characters, over the limit of {limits.max_total_chars}"
        )
    depth = _max_depth(text)
    if depth > limits.max_depth:
        raise ToolArgsRejected(f"nested {depth} deep, over the limit of {limits.max_depth}")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ToolArgsRejected(f"not valid JSON ({exc})") from None
    # A provider's text escaping half a pair (an emoji cut at a token boundary): refused
    # where it arrives, as a bad response; it would make the next request unsendable.
    cut = bool(_SURROGATE_ESCAPE.search(text) or _SURROGATE.search(text))
    return check_tool_args(value, limits, refuse_cut=cut)


def check_tool_args(
    value: Any, limits: ToolArgLimits = DEFAULT_LIMITS, *, refuse_cut: bool = False
) -> dict[str, Any]:
    """`value` when it is an arguments object within the limits (walked without recursion);
    with `refuse_cut`, also without a string or key holding half of a UTF-16 surrogate pair
    (a character cut in two, which no request, journal or tool can carry as UTF-8). A number
    that JSON has not (NaN, an infinity: Python's decoder reads `NaN` as one) is refused too:
    no journal could keep the call."""
    if not isinstance(value, dict):
        raise ToolArgsRejected(f"a {type(value).__name__}, not an object")
    stack: list[tuple[Any, str, int]] = [(value, "$", 1)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                raise ToolArgsRejected(f"{item!r} is no JSON number", where)
            continue
        if isinstance(item, str):
            if len(item) > limits.max_string_chars:
                raise ToolArgsRejected(
                    f"a string of {len(item)} characters, over the limit of "
                    f"{limits.max_string_chars}",
                    where,
                )
            if refuse_cut:
                _refuse_cut(item, where)
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > limits.max_depth:
            raise ToolArgsRejected(f"nested deeper than the limit of {limits.max_depth}", where)
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):  # (only a Python caller's value can hold one)
                    raise ToolArgsRejected(f"a key of type {type(key).__name__}, not str", where)
                if len(key) > limits.max_string_chars:
                    raise ToolArgsRejected("a key over the string limit", where)
                if refuse_cut:
                    _refuse_cut(key, where)
                if isinstance(child, str | dict | list | float):  # (an int: nothing to check)
                    stack.append((child, f"{where}.{key}", depth + 1))
        else:
            stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))
    return value


def _refuse_cut(text: str, where: str) -> None:
    found = _SURROGATE.search(text)
    if found is not None:
        raise ToolArgsRejected(
            f"{found[0]!a} is half of a UTF-16 surrogate pair (a character cut in two), "
            "which UTF-8 cannot carry",
            where,
        )


def _max_depth(text: str) -> int:
    """The deepest nesting of `[`/`{` in JSON text, strings skipped; no recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest
