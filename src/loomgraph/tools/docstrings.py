"""Reading a tool's description and argument descriptions from its Google-style docstring."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

# Section headers that open the argument list, and any header that closes it.
_ARGS_HEADERS = frozenset({"args", "arguments", "parameters", "params"})
_SECTION = re.compile(r"^([A-Za-z][A-Za-z ]*):\s*$")
# `name: text`, `name (type): text`, `*args: text`, `**kwargs (dict): text`
_ENTRY = re.compile(r"^\*{0,2}(?P<name>[A-Za-z_]\w*)\s*(?:\([^)]*\))?\s*:(?P<text>.*)$")


@dataclass(frozen=True, slots=True)
class Docstring:
    """The parts of a docstring a tool spec uses."""

    description: str = ""
    args: dict[str, str] = field(default_factory=dict)


def parse_docstring(doc: str | None) -> Docstring:
    """Split a docstring into its first paragraph and the entries of its `Args:` section."""
    if not doc:
        return Docstring()
    lines = inspect.cleandoc(doc).splitlines()
    return Docstring(description=_first_paragraph(lines), args=_args_section(lines))


def _first_paragraph(lines: list[str]) -> str:
    paragraph: list[str] = []
    for line in lines:
        stripped = line.strip()
        if not stripped or _SECTION.match(stripped):
            break  # a blank line ends the paragraph; a docstring may also open with `Args:`
        paragraph.append(stripped)
    return " ".join(paragraph)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _args_section(lines: list[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    start = next(
        (
            i
            for i, line in enumerate(lines)
            if (m := _SECTION.match(line.strip())) and m.group(1).lower() in _ARGS_HEADERS
        ),
        None,
    )
    if start is None:
        return args
    header_indent = _indent(lines[start])
    entry_indent: int | None = None
    current: str | None = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        indent = _indent(line)
        if indent <= header_indent:
            break  # the next section, e.g. `Returns:`
        if entry_indent is None:
            entry_indent = indent
        if indent == entry_indent and (m := _ENTRY.match(line.strip())):
            current = m.group("name")
            args[current] = m.group("text").strip()
        elif current is not None and indent > entry_indent:
            # A continuation line of the current entry.
            args[current] = f"{args[current]} {line.strip()}".strip()
    return args
