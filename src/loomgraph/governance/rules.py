"""Permission rules: `tool` or `tool(arg=glob, ...)`, parsed strictly, matched on canonical args.

A rule names a tool (a glob, so `mcp_*` works) and optionally constrains arguments by globs.
Arguments are compared in canonical form: every path-like word is normalised
(`/data/../etc/passwd` is `/etc/passwd`, `//etc` is `/etc`), numbers and booleans are JSON
(`3`, `true`), objects are canonical JSON. In a value that is one path, `*` and `?` stay within
one path segment and `**` crosses `/`; in any other value `*` matches anything, so
`shell(cmd=rm *)` matches `rm -rf /`.

A list argument matches a deny or ask rule when any element matches, an allow rule only when
every element does; a string with spaces that starts like a path (`/my docs/../x`, or a
command line `/bin/ls /tmp`) is read both as one path and word by word, and again a deny or
ask rule needs one reading to match, an allow rule all of them. So an ambiguity can make a
call ask or be denied, never make it allowed.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from loomgraph.protocols import ToolCall

__all__ = ["Rule", "canonical", "glob_regex", "parse_rule", "readings"]

_TOOL = re.compile(r"[A-Za-z0-9_\-.:*?\[\]!]+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Rule:
    """One parsed rule: its text, tool glob and (argument name, value glob) constraints."""

    text: str
    tool: str
    args: tuple[tuple[str, str], ...] = ()
    _tool_re: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _globs: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tool_re", glob_regex(self.tool, path=False))
        object.__setattr__(
            self,
            "_globs",
            tuple((glob_regex(g, path=False), glob_regex(g, path=True)) for _, g in self.args),
        )

    def matches(self, call: ToolCall, *, every: bool = False) -> bool:
        """Whether the call is covered; `every` (for allow rules): in all elements and readings.

        Without `every` (deny and ask rules) one element of a list, and one reading of a value
        that can be read two ways, is enough.
        """
        if not self._tool_re.fullmatch(str(call.get("tool", ""))):
            return False
        args = call.get("args") or {}
        for (name, _), (text_re, path_re) in zip(self.args, self._globs, strict=True):
            value = _lookup(args, name)
            if value is _MISSING:
                return False
            items = value if isinstance(value, list | tuple) else [value]
            hits = (
                (path_re if is_path else text_re).fullmatch(text) is not None
                for item in items
                for text, is_path in readings(item)
            )
            if not (all(hits) if every else any(hits)):
                return False
        return True


def parse_rule(text: str) -> Rule:
    """Parse `tool` or `tool(arg=glob, ...)`; a ValueError names the rule and the problem."""
    if not isinstance(text, str):
        raise ValueError(f"permission rule {text!r} is not a string")
    rule = text.strip()

    def bad(problem: str) -> ValueError:
        return ValueError(f"invalid permission rule {text!r}: {problem}")

    head, paren, rest = rule.partition("(")
    head = head.strip()
    if not head:
        raise bad("no tool name")
    if not _TOOL.fullmatch(head):
        raise bad(f"tool name {head!r} may use only letters, digits, _ - . : and * ? [ ]")
    if not paren:
        return Rule(rule, head)
    if not rest.endswith(")"):
        raise bad("missing ')' at the end")
    args = _parse_args(rest[:-1], bad)
    if not args:
        raise bad("empty argument list; write just the tool name")
    return Rule(rule, head, tuple(args))


def _parse_args(inner: str, bad: Any) -> list[tuple[str, str]]:
    """`name=value, ...` where a value is bare (no comma) or quoted with ' or \"."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(inner)
    while True:
        while i < n and inner[i].isspace():
            i += 1
        if i >= n:
            if out:
                raise bad("trailing ','")
            return out
        eq = inner.find("=", i)
        if eq < 0:
            raise bad(f"expected name=glob, got {inner[i:].strip()!r}")
        name = inner[i:eq].strip()
        if not _NAME.fullmatch(name):
            raise bad(f"argument name {name!r} is not an identifier (or dotted path)")
        if any(name == seen for seen, _ in out):
            raise bad(f"argument {name!r} appears twice")
        i = eq + 1
        while i < n and inner[i].isspace():
            i += 1
        if i < n and inner[i] in "\"'":
            value, i = _quoted(inner, i, bad)
            while i < n and inner[i].isspace():
                i += 1
            if i < n and inner[i] != ",":
                raise bad(f"unexpected {inner[i:].strip()!r} after the quoted value of {name!r}")
        else:
            end = inner.find(",", i)
            end = n if end < 0 else end
            value, i = inner[i:end].strip(), end
            if not value:
                raise bad(f'argument {name!r} has an empty glob (quote it: {name}="")')
            if any(q in value for q in "\"'"):
                raise bad(f"argument {name!r}: quote the whole value, not part of it")
        out.append((name, value))
        if i >= n:
            return out
        i += 1  # the comma


def _quoted(text: str, i: int, bad: Any) -> tuple[str, int]:
    quote, i, chars = text[i], i + 1, []
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            chars.append(text[i + 1])
            i += 2
            continue
        if ch == quote:
            return "".join(chars), i + 1
        chars.append(ch)
        i += 1
    raise bad(f"unterminated {quote} quote")


def glob_regex(pattern: str, *, path: bool) -> re.Pattern[str]:
    """A compiled fnmatch-style glob; with `path`, `*` and `?` do not cross `/`, `**` does."""
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
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _class_end(pattern: str, start: int) -> int:
    """The index of the `]` closing a character class at `start`, or -1 (then `[` is literal)."""
    j = start + 1
    if j < len(pattern) and pattern[j] == "!":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    close = pattern.find("]", j)
    return close


def canonical(value: Any) -> str:
    """The main reading of an argument: path-like words normalised, non-strings as JSON."""
    return readings(value)[0][0]


def readings(value: Any) -> list[tuple[str, bool]]:
    """Every way a value can be read, as (text, is one path).

    A string with whitespace that starts like a path may be one path with spaces or a command
    line: it has both readings, the whole string normalised as a path and word by word.
    """
    if not isinstance(value, str):
        if value is None or isinstance(value, bool | int | float):
            return [(json.dumps(value), False)]
        try:
            return [(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str), False)]
        except (TypeError, ValueError):
            return [(str(value), False)]
    if _is_path(value):
        return [(_normpath(value), True)]
    words = re.sub(
        r"\S+", lambda m: _normpath(m.group()) if _is_path(m.group()) else m.group(), value
    )
    out = [(words, False)]
    if "://" not in value and value.startswith(("/", "~", "./", "../")):
        out.append((_normpath(value), True))
    return out


def _is_path(text: str) -> bool:
    """A single word that names a file: has a `/` (or is `.`/`..`/`~…`), not a URL."""
    if not text or "://" in text or any(c.isspace() for c in text):
        return False
    return "/" in text or text in (".", "..") or text.startswith("~")


def _normpath(text: str) -> str:
    norm = posixpath.normpath(text)
    # POSIX keeps a leading `//` (implementation-defined); the kernel reads it as `/`.
    return "/" + norm.lstrip("/") if norm.startswith("//") else norm


def _lookup(args: Any, name: str) -> Any:
    """An argument by name; a dotted name walks into nested objects (`headers.host`)."""
    if isinstance(args, dict) and name in args:
        return args[name]
    current = args
    for part in name.split("."):
        if not isinstance(current, dict) or part not in current:
            return _MISSING
        current = current[part]
    return current
