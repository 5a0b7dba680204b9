"""A tool's description and argument descriptions from its docstring, in Google, NumPy,
Sphinx (reST) or Epydoc style (read by the `docstring-parser` library)."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

# A docstring that opens straight with its argument section has no description.
_OPENS_WITH_SECTION = re.compile(r"^(args|arguments|parameters|params)\s*:?\s*$", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
# The marks a one-line section needs in some docstring style (`:param x:`, `@param x:`).
_SECTION_MARKS = frozenset(":@")


@dataclass(frozen=True, slots=True)
class Docstring:
    """The parts of a docstring a tool spec uses."""

    description: str = ""
    args: dict[str, str] = field(default_factory=dict)


def parse_docstring(doc: str | None) -> Docstring:
    """The first paragraph of a docstring, and the description of each argument."""
    if not doc:
        return Docstring()
    text = inspect.cleandoc(doc)
    lines = text.splitlines()
    if not lines:  # blank
        return Docstring()
    header = lines[0].strip()
    bare = bool(_OPENS_WITH_SECTION.match(header))
    body = [line for line in lines[1:] if line.strip()]
    if bare and header.endswith(":") and body and not body[0][0].isspace():
        # `Args:` first: cleandoc (here, or inspect.getdoc's) dedents the lines after the
        # first by their common indent, which took the section's own indent away; put it back.
        lines = [lines[0], *(f"    {line}" if line.strip() else line for line in lines[1:])]
        text = "\n".join(lines)
    if len(lines) == 1 and not bare and not _SECTION_MARKS.intersection(text):
        # One line that no docstring style reads a section from: the parser would return it
        # whole, and a tool with a one-line docstring need not import it.
        return Docstring(_flat(text))
    import docstring_parser  # lazily: `import loomgraph` stays light

    if bare:  # give the parser a summary line to skip
        text = "-\n\n" + text
    parsed = docstring_parser.parse(text)
    args = {param.arg_name.lstrip("*"): _flat(param.description or "") for param in parsed.params}
    if bare:
        return Docstring("", args)
    summary = parsed.short_description or ""
    if parsed.long_description and not parsed.blank_after_short_description:
        # The summary goes on past its first line: keep the whole first paragraph.
        summary = f"{summary} {parsed.long_description.split(chr(10) * 2)[0]}"
    return Docstring(_flat(summary), args)


def _flat(text: str) -> str:
    return _SPACE.sub(" ", text).strip()
