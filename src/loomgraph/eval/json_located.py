"""Where each part of a JSON text was written, and the keys written twice in one object.

`json.loads` keeps the last value of a repeated key without a word and says nothing of
lines; a dataset reports every problem at its line, as its YAML reader does
(`protocols.safe_yaml.locate`). This scans a text `json.loads` has read already: strings,
brackets, colons and commas, in a loop (a text may nest deeper than the stack).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from loomgraph.protocols.safe_yaml import Duplicate, Lines

__all__ = ["locate_json"]

# A string, a bracket or separator, a line break, or a run of anything else (a number,
# `true`, blanks): JSON strings hold no raw line break, so `\n` outside them ends a line.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,\n]|[^"{}\[\]:,\n]+', re.DOTALL)


@dataclass(slots=True)
class _Open:
    """An object or array being read: its data path, and where its next value goes."""

    path: tuple[str | int, ...]
    is_object: bool
    keys: set[str] = field(default_factory=set)
    key: str | None = None  # an object's key whose value comes next
    index: int = 0  # an array's next index
    awaiting_key: bool = True


def locate_json(
    text: str, at: tuple[str | int, ...] = (), first_line: int = 1
) -> tuple[Lines, list[Duplicate]]:
    """The line of each data path of the JSON `text` (a value read by `json.loads`), an
    object member's at its key's line and an array item's where it starts, each path under
    `at`; and each key written twice in one object (at the second one's line). `first_line`
    is the line `text` starts at (a JSON Lines file's line)."""
    lines: Lines = {}
    duplicates: list[Duplicate] = []
    stack: list[_Open] = []
    line = first_line
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if token == "\n":
            line += 1
        elif token in ("]", "}") and stack:
            stack.pop()
        elif token == ",":
            if stack and stack[-1].is_object:
                stack[-1].awaiting_key = True
            elif stack:
                stack[-1].index += 1
        elif token == ":" or token.isspace():
            continue
        elif stack and stack[-1].is_object and stack[-1].awaiting_key:
            _key(stack[-1], json.loads(token), line, lines, duplicates)
        else:  # a value starts: a string, a number or literal, an object, an array
            path = _value_path(stack, at, line, lines)
            if token in ("{", "["):
                stack.append(_Open(path, is_object=token == "{"))
    lines.setdefault(at, first_line)
    return lines, duplicates


def _key(into: _Open, key: str, line: int, lines: Lines, duplicates: list[Duplicate]) -> None:
    """An object's key: the line its member is reported at, and whether it came before."""
    if key in into.keys:
        duplicates.append(Duplicate(key, into.path, line))
    into.keys.add(key)
    into.key, into.awaiting_key = key, False
    lines[(*into.path, key)] = line


def _value_path(
    stack: list[_Open], at: tuple[str | int, ...], line: int, lines: Lines
) -> tuple[str | int, ...]:
    """The data path of a value starting at `line` (an array item's line kept here)."""
    if not stack:
        lines[at] = line
        return at
    top = stack[-1]
    if top.is_object:
        return (*top.path, top.key or "")
    path = (*top.path, top.index)
    lines[path] = line
    return path
