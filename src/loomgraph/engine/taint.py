"""Taint: which tool calls carry text that came from untrusted tool results.

Tool results are untrusted unless their tool is declared `trusted`. A call is tainted when
one of its string arguments (compared case-folded, with whitespace collapsed) is found in an
untrusted result — the whole argument, if it has at least MIN_TAINT_CHARS characters, or a
run of at least RUN_CHARS + RUN_STRIDE - 1 characters inside a longer one. A structured
(JSON) result is searched as its text and as each string inside it, so text copied from it
with its quotes and newlines is found too. An egress tool's tainted call is then asked about
(or denied) instead of allowed. It is a heuristic: a paraphrased or re-encoded injection is
not recognised.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

# Shorter strings (a yes, a number, a common word) are too likely to appear by chance.
MIN_TAINT_CHARS = 8
# Runs inside a longer argument are looked for as windows of RUN_CHARS every RUN_STRIDE
# characters: a shared run of RUN_CHARS + RUN_STRIDE - 1 characters always covers a window.
RUN_CHARS = 16
RUN_STRIDE = 4

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


def untrusted_texts(content: str) -> list[str]:
    """What taint searches in one untrusted result: its text and, for a JSON result, each
    string inside it (normalised)."""
    texts = [normalise(content)]
    if content[:1] in ("{", "["):
        try:
            data = json.loads(content)
        except ValueError:
            return texts
        texts.extend(normalise(s) for s in strings_in(data) if len(s) >= MIN_TAINT_CHARS)
    return texts


def note_result(untrusted: set[str], spec: Mapping[str, Any] | None, content: str) -> None:
    """Remember a tool's result as untrusted text, unless its tool is declared trusted (a
    tool no longer offered counts as untrusted)."""
    if spec is None or not spec.get("trusted"):
        untrusted.update(untrusted_texts(content))


def is_tainted(args: Any, untrusted: Iterable[str]) -> bool:
    """True when an argument, or a long enough run inside one, appears in one of the
    (normalised) untrusted results."""
    for text in strings_in(args):
        needle = normalise(text)
        if len(needle) < MIN_TAINT_CHARS:
            continue
        if any(needle in source for source in untrusted):
            return True
        for start in range(0, len(needle) - RUN_CHARS + 1, RUN_STRIDE):
            window = needle[start : start + RUN_CHARS]
            if any(window in source for source in untrusted):
                return True
    return False
