"""Where the command writes, and whether in colour: a terminal gets colour (through `rich`,
imported only then), a pipe or `NO_COLOR` gets plain text. Text the command did not write
itself (a run's ids, reason, output, state; a connection string) goes through `safe` and
`mask_passwords` first."""

from __future__ import annotations

import os
import re
import sys
from functools import cache
from typing import Any, TextIO

from loomgraph.protocols.shown_text import DISGUISING, shown_escape

# What a terminal acts on or what disguises text (`protocols.shown_text`), and lone
# surrogates, which no terminal can be sent.
_UNSAFE = re.compile(f"[{DISGUISING}\ud800-\udfff]")
_KEEP = {"\n", "\t"}
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
# `scheme://user:PASSWORD@host` and a `password=` query parameter of a connection string.
# The password runs to the last `@` before the host (greedy: it may hold an `@` itself, as
# `describe_dsn` reads it).
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)([^\s/]*)(@)")
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pass)=)([^&\s]*)", re.IGNORECASE)
MASK = "***"


def _escaped(match: re.Match[str]) -> str:
    char = match.group(0)
    return _NAMED.get(char) or shown_escape(char)


def safe(text: str, *, newlines: bool = True) -> str:
    """`text` safe to print on a terminal: every control character (C0 but newline and tab,
    DEL, C1) and every invisible format character (bidi overrides, zero-width ones) shown as
    an escape (`\\x1b`, `\\u202e`), so stored text can neither drive the terminal (colours,
    window title, clipboard) nor read as something else. Printable text, any script, stays
    as it is. `newlines=False` escapes newline and tab too (a table cell, one line)."""
    if newlines:
        return _UNSAFE.sub(lambda m: m.group(0) if m.group(0) in _KEEP else _escaped(m), text)
    return _UNSAFE.sub(_escaped, text)


def mask_passwords(text: str) -> str:
    """`text` with the password of every connection string in it (`postgres://user:PW@…`,
    `?password=PW`) shown as `***`."""
    text = _URL_PASSWORD.sub(
        lambda m: m.group(1) + MASK + m.group(3) if m.group(2) else m.group(0), text
    )
    return _QUERY_PASSWORD.sub(lambda m: m.group(1) + MASK, text)


def colour(stream: TextIO | None = None) -> bool:
    """True when `stream` (stdout by default) is a terminal and NO_COLOR is not set."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def can_ask(args: Any) -> bool:
    """Whether the command may ask the person running it (an `interrupt`'s question, an
    approval): stdin and stdout are a terminal, and neither `--json` (a program reads the
    output) nor `--no-input` says otherwise. A pipe, a file or CI never is asked."""
    if getattr(args, "json", False) or getattr(args, "no_input", False):
        return False
    streams = (sys.stdin, sys.stdout)
    return all(bool(getattr(s, "isatty", None) and s.isatty()) for s in streams)


@cache
def console(stderr: bool = False) -> Any:
    """The rich Console of stdout (or stderr); call only when `colour()` is true."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def say(text: str, style: str = "") -> None:
    """Print a line on stdout, in `style` on a terminal (rich markup is not interpreted);
    control characters in it are shown escaped (`safe`)."""
    text = safe(text)
    if colour():
        console().print(text, style=style or None, markup=False)
    else:
        print(text, flush=True)


def warn(text: str, style: str = "bold red") -> None:
    """Print `loomgraph: text` on stderr, coloured on a terminal; secrets substituted into
    agent files and connection strings' passwords masked, control characters escaped."""
    from loomgraph.authoring.secrets import redact

    line = safe(mask_passwords(redact(f"loomgraph: {text}")))
    if colour(sys.stderr):
        console(stderr=True).print(line, style=style, markup=False)
    else:
        print(line, file=sys.stderr, flush=True)
