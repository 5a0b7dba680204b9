"""Taint: which tool calls carry text that came from untrusted tool results.

Tool results are untrusted unless their tool is declared `trusted`. A call whose arguments
contain a run of text found in an untrusted result (compared case-folded, with whitespace
collapsed) is tainted; an egress tool's tainted call is then asked about (or denied) instead
of allowed. It is a heuristic: a paraphrased or re-encoded injection is not recognised.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

# Shorter strings (a yes, a number, a common word) are too likely to appear by chance.
MIN_TAINT_CHARS = 8

_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Text as taint compares it: case-folded, whitespace collapsed."""
    return _SPACE.sub(" ", text.casefold()).strip()


def strings_in(value: Any) -> Iterator[str]:
    """Every string inside a JSON-shaped value, keys excluded."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings_in(item)


def is_tainted(args: Any, untrusted: list[str]) -> bool:
    """True when an argument's text appears in one of the (normalised) untrusted results."""
    for text in strings_in(args):
        needle = normalise(text)
        if len(needle) >= MIN_TAINT_CHARS and any(needle in source for source in untrusted):
            return True
    return False
