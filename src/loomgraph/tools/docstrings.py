"""A tool's description and argument descriptions from its docstring, in Google, NumPy,
Sphinx (reST) or Epydoc style (read by the `docstring-parser` library)."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

# A docstring that opens straight with its argument section has no description.
_OPENS_WITH_SECTION = re.compile(r"^(args|arguments|parameters|params)\s*:?\s*$", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Docstring:
    """The parts of a docstring a tool spec uses."""

    description: str = ""
    args: dict[str, str] = field(default_factory=dict)


def parse_docstring(doc: str | None) -> Docstring:
    """The first paragraph of a docstring, and the description of each argument."""
    if not doc:
        return Docstring()
    import docstring_parser  # lazily: `import loomgraph` stays light

    text = inspect.cleandoc(doc)
    bare = bool(_OPENS_WITH_SECTION.match(text.splitlines()[0].strip()))
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
