"""Globs: fnmatch-style `*`, `?`, `[abc]`, `[!abc]`, `{a,b}` alternatives, `**` in paths."""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["glob_regex"]


@lru_cache(maxsize=4096)
def glob_regex(pattern: str, *, path: bool, fold: bool = False) -> re.Pattern[str]:
    """A compiled glob: in a `path` `*` and `?` stay in a segment, `**` crosses `/`."""
    flags = re.DOTALL | (re.IGNORECASE if fold else 0)
    return re.compile(_translate(pattern, path), flags)


def _translate(pattern: str, path: bool) -> str:
    out, i, n = [], 0, len(pattern)
    star, one = ("[^/]*", "[^/]") if path else (".*", ".")
    while i < n:
        ch = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if path and pattern.startswith("/", i):
                out.append("(?:.*/)?")  # `a/**/b` also matches `a/b`
                i += 1
            else:
                out.append(".*")
            continue
        if ch == "*":
            out.append(star)
        elif ch == "?":
            out.append(one)
        elif ch == "[" and (close := _class_end(pattern, i)) > 0:
            body = pattern[i + 1 : close]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            body = body.replace("\\", "\\\\").replace("^", "\\^")
            out.append(f"[{'^' if negate else ''}{body}]")
            i = close
        elif ch == "{" and (alts := _alternatives(pattern, i)) is not None:
            options, close = alts
            out.append("(?:" + "|".join(_translate(o, path) for o in options) + ")")
            i = close
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def _class_end(pattern: str, start: int) -> int:
    """The index of the `]` closing a character class at `start`, or -1 (then `[` is literal)."""
    j = start + 1
    if j < len(pattern) and pattern[j] == "!":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    return pattern.find("]", j)


def _alternatives(pattern: str, start: int) -> tuple[list[str], int] | None:
    """The options of `{a,b}` at `start` and the index of its `}`; None when unbalanced."""
    depth, options, begin = 0, [], start + 1
    for j in range(start, len(pattern)):
        ch = pattern[j]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                options.append(pattern[begin:j])
                return options, j
        elif ch == "," and depth == 1:
            options.append(pattern[begin:j])
            begin = j + 1
    return None
