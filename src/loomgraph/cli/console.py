"""Where the command writes, and whether in colour: a terminal gets colour (through `rich`,
imported only then), a pipe or `NO_COLOR` gets plain text."""

from __future__ import annotations

import os
import sys
from functools import cache
from typing import Any, TextIO


def colour(stream: TextIO | None = None) -> bool:
    """True when `stream` (stdout by default) is a terminal and NO_COLOR is not set."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


@cache
def console(stderr: bool = False) -> Any:
    """The rich Console of stdout (or stderr); call only when `colour()` is true."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def say(text: str, style: str = "") -> None:
    """Print a line on stdout, in `style` on a terminal (rich markup is not interpreted)."""
    if colour():
        console().print(text, style=style or None, markup=False)
    else:
        print(text, flush=True)


def warn(text: str, style: str = "bold red") -> None:
    """Print `loomgraph: text` on stderr, coloured on a terminal."""
    from loomgraph.authoring.secrets import redact

    line = redact(f"loomgraph: {text}")
    if colour(sys.stderr):
        console(stderr=True).print(line, style=style, markup=False)
    else:
        print(line, file=sys.stderr, flush=True)
