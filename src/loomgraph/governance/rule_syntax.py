"""The rule grammar: parse rule text into conditions, and render them back canonically.

    rule      = tool [ "(" cond { "," cond } ")" ] [ "unless" rule { "," rule } ]
    cond      = name [ ":" kind ] "=" value
              | name cmp number
              | name "in" ( "[" item { "," item } "]" | "$" set )
    kind      = "path" | "command"
    value     = "<absent>" | "<present>" | ( "all" | "any" ) "(" glob ")" | glob
    cmp       = "<" | "<=" | ">" | ">=" | "==" | "!="

A glob or item is bare (ends at a `,` or `)` outside `{}` and `()`, surrounding spaces
dropped) or quoted with ' or " (backslash escapes the next character). A bare glob may not
start with `<`, `>`, `=` or `!` (`amount=>5000` is a slip for `amount>=5000`) nor with a word
and `(` (`ANY(`, `anyy(`: a misspelt quantifier): those must be quoted. `unless` belongs only
to ask rules, and an `unless` rule has no `unless` of its own.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Literal

from loomgraph.governance.rule_errors import RuleSyntaxError

__all__ = ["Cond", "ParsedRule", "parse_text", "render"]

Op = Literal["glob", "absent", "present", "in", "cmp"]
KINDS = ("path", "command")
CMPS = ("<=", ">=", "==", "!=", "<", ">")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_SET = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_TOOL = re.compile(r"[A-Za-z0-9_\-.:*?\[\]!{},]+")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
QUANTS = ("all", "any")
# What a bare glob may not start with: the characters of a comparison (`amount=>5000` is a
# slip for `>=`), and a word called like a quantifier that is none (`ANY(`, `anyy(`).
_CMP_STARTS = frozenset("<>=!")
_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\(")


@dataclass(frozen=True, slots=True)
class Cond:
    """One argument condition: a glob (maybe quantified), absent/present, a set, a comparison."""

    name: str
    op: Op
    kind: str | None = None
    glob: str = ""
    quant: str | None = None  # "all" | "any" for list-valued arguments
    items: tuple[str, ...] | None = None  # a literal set
    set_name: str | None = None  # a named set, `$team`
    cmp: str = ""
    number: int | float = 0  # an int bound stays exact


@dataclass(frozen=True, slots=True)
class ParsedRule:
    """A rule's parts: the tool glob, its conditions, and the rules of its `unless`."""

    tool: str
    conds: tuple[Cond, ...]
    unless: tuple[ParsedRule, ...]


class _Scanner:
    """A cursor over one rule's text that raises RuleSyntaxError at its position."""

    def __init__(self, text: str) -> None:
        self.text, self.i = text, 0

    def bad(self, problem: str, at: int | None = None) -> RuleSyntaxError:
        return RuleSyntaxError(self.text, self.i if at is None else at, problem)

    def spaces(self) -> None:
        while self.i < len(self.text) and self.text[self.i].isspace():
            self.i += 1

    def peek(self, s: str) -> bool:
        return self.text.startswith(s, self.i)

    def done(self) -> bool:
        return self.i >= len(self.text)

    def word(self, pattern: re.Pattern[str]) -> str:
        m = pattern.match(self.text, self.i)
        if not m:
            return ""
        self.i = m.end()
        return m.group()


def parse_text(text: str, *, unless_allowed: bool = True) -> ParsedRule:
    """Parse one rule's text; every problem raises RuleSyntaxError with its position."""
    if not isinstance(text, str):
        raise RuleSyntaxError(repr(text), 0, "a rule must be a string")
    s = _Scanner(text)
    rule = _rule(s, unless_allowed=unless_allowed, nested=False)
    s.spaces()
    if not s.done():
        raise s.bad(f"unexpected {text[s.i :]!r}")
    return rule


def _rule(s: _Scanner, *, unless_allowed: bool, nested: bool) -> ParsedRule:
    s.spaces()
    start = s.i
    tool = _tool(s)
    if not tool:
        raise s.bad("no tool name" if s.done() or s.text[s.i] in ",(" else "bad tool name", start)
    conds: tuple[Cond, ...] = ()
    if s.peek("("):
        s.i += 1
        conds = _conds(s)
    s.spaces()
    unless: tuple[ParsedRule, ...] = ()
    if s.peek("unless") and (s.i + 6 == len(s.text) or s.text[s.i + 6].isspace()):
        if nested or not unless_allowed:
            raise s.bad("only an ask rule may have `unless`, and an unless rule has none")
        s.i += 6
        found = [_rule(s, unless_allowed=False, nested=True)]
        s.spaces()
        while s.peek(","):
            s.i += 1
            found.append(_rule(s, unless_allowed=False, nested=True))
            s.spaces()
        unless = tuple(found)
    elif not s.done() and not (nested and s.peek(",")):
        if s.text[s.i] == ")":
            raise s.bad("')' without '('")
        raise s.bad(f"unexpected {s.text[s.i :]!r} after the tool name")
    return ParsedRule(tool, conds, unless)


def _tool(s: _Scanner) -> str:
    """A tool glob; commas belong to it only inside `{...}`."""
    start, depth = s.i, 0
    while not s.done():
        ch = s.text[s.i]
        if ch.isspace() or ch == "(" or ch == ")" or (ch == "," and depth == 0):
            break
        depth += (ch == "{") - (ch == "}")
        s.i += 1
    tool = s.text[start : s.i]
    if tool and not _TOOL.fullmatch(tool):
        raise s.bad(
            f"tool name {tool!r} may use only ASCII letters and digits, _ - . : and * ? [ ] {{ }}",
            start,
        )
    return tool


def _conds(s: _Scanner) -> tuple[Cond, ...]:
    out: list[Cond] = []
    while True:
        s.spaces()
        if s.peek(")"):
            raise s.bad("trailing ','" if out else "empty argument list; write just the tool")
        out.append(_cond(s, [c.name for c in out]))
        s.spaces()
        if s.peek(","):
            s.i += 1
            continue
        if s.peek(")"):
            s.i += 1
            return tuple(out)
        raise s.bad("missing ')' at the end" if s.done() else f"unexpected {s.text[s.i :]!r}")


def _cond(s: _Scanner, seen: list[str]) -> Cond:
    start = s.i
    name = s.word(_NAME)
    if not name or (not s.done() and (s.text[s.i].isalnum() or s.text[s.i] in "_.")):
        raise s.bad("expected an argument name (an identifier or a dotted path)", start)
    if name in seen:
        raise s.bad(f"argument {name!r} appears twice", start)
    kind = None
    if s.peek(":"):
        s.i += 1
        kind = s.word(_NAME)
        if kind not in KINDS:
            raise s.bad(f"unknown kind {kind!r}; use {' or '.join(KINDS)}", s.i - len(kind))
    s.spaces()
    if s.peek("in") and s.i + 2 < len(s.text) and s.text[s.i + 2] in " \t[$":
        s.i += 2
        s.spaces()
        return _in(s, name, kind)
    for op in CMPS:
        if s.peek(op):
            s.i += len(op)
            s.spaces()
            at, m = s.i, s.word(_NUMBER)
            number = _bound(m)
            if number is None:
                raise s.bad(f"argument {name!r}: {op} needs a number", at)
            return Cond(name, "cmp", kind, cmp=op, number=number)
    if not s.peek("="):
        raise s.bad(f"expected =, a comparison or `in` after {name!r}")
    s.i += 1
    s.spaces()
    for word in ("<absent>", "<present>"):
        if s.peek(word):
            s.i += len(word)
            return Cond(name, "absent" if word == "<absent>" else "present", kind)
    for quant in QUANTS:
        if s.peek(quant + "("):
            s.i += len(quant) + 1
            glob = _glob(s, name, closers=")")
            s.spaces()
            if not s.peek(")"):
                raise s.bad(f"missing ')' closing {quant}(")
            s.i += 1
            return Cond(name, "glob", kind, glob=glob, quant=quant)
    return Cond(name, "glob", kind, glob=_glob(s, name, closers=",)"))


def _glob(s: _Scanner, name: str, *, closers: str) -> str:
    """A glob; a bare one that reads like a slip (`=>5`, `ANY(...)`) is refused, not matched
    literally: a deny rule that silently matches nothing is worse than an error."""
    if not (s.peek('"') or s.peek("'")):
        if not s.done() and s.text[s.i] in _CMP_STARTS:
            raise s.bad(_comparison_slip(s, name))
        if (m := _CALL.match(s.text, s.i)) is not None:
            raise s.bad(_quantifier_slip(m.group(1), name))
    return _value(s, name, closers=closers)


def _comparison_slip(s: _Scanner, name: str) -> str:
    """What `name=<rest>` probably meant: the comparison whose operator was written after `=`."""
    rest = s.text[s.i :]
    first = rest[0]
    bare = rest[2:] if rest[1:2] == "=" else rest[1:]
    number = _NUMBER.match(bare.lstrip())
    tail = number.group() if number else "N"
    meant = {"<": ["<=", "<"], ">": [">=", ">"], "!": ["!="], "=": ["=="]}[first]
    if rest[1:2] == "=" and first in "<>":
        meant = [first + "="]
    guess = " or ".join(f"{name}{op}{tail}" for op in meant)
    absent = "use <absent> or <present>, or " if first == "<" else ""
    return (
        f"argument {name!r}: {absent}did you mean {guess} (no '=' before a comparison); "
        f"quote a glob that starts with {first!r}"
    )


def _quantifier_slip(word: str, name: str) -> str:
    """A refusal of `name=word(...)`, where `word` is no quantifier: did you mean one?"""
    quote = f'quote a glob that holds a call ({name}="{word}(...)")'
    if word in QUANTS:
        return f"argument {name!r}: a quantifier holds a glob, not another quantifier; {quote}"
    close = difflib.get_close_matches(word.lower(), QUANTS, n=1, cutoff=0.5)
    meant = f"did you mean {close[0]}(...)" if close else "use all(...) or any(...)"
    return f"argument {name!r}: {word!r} is no quantifier ({meant}); {quote}"


def _bound(text: str) -> int | float | None:
    """A comparison's number: an integer literal as an int, compared exactly however large
    (as a float, 9007199254740993 would be 2**53), another one as a finite float."""
    if _INTEGER.fullmatch(text):
        try:
            return int(text)
        except ValueError:
            return None  # more digits than int() converts (4300)
    number = float(text) if text else math.nan
    return number if math.isfinite(number) else None


def _in(s: _Scanner, name: str, kind: str | None) -> Cond:
    if s.peek("$"):
        s.i += 1
        set_name = s.word(_SET)
        if not set_name:
            raise s.bad("expected a set name after '$'")
        return Cond(name, "in", kind, set_name=set_name)
    if not s.peek("["):
        raise s.bad("`in` takes [item, ...] or $set")
    s.i += 1
    items: list[str] = []
    while True:
        s.spaces()
        if s.peek("]") and not items:
            raise s.bad("an empty set matches nothing; leave the rule out")
        items.append(_value(s, name, closers=",]"))
        s.spaces()
        if s.peek(","):
            s.i += 1
        elif s.peek("]"):
            s.i += 1
            return Cond(name, "in", kind, items=tuple(items))
        else:
            raise s.bad("missing ']' closing the set")


def _value(s: _Scanner, name: str, *, closers: str) -> str:
    """A quoted or bare glob/item; a bare one ends at a closer outside `{}` and `()`."""
    if s.peek('"') or s.peek("'"):
        return _quoted(s)
    start, depth = s.i, 0
    while not s.done():
        ch = s.text[s.i]
        if depth == 0 and ch in closers:
            break
        if ch == ")" and depth == 0:
            break  # closes nothing of the value's own: the end of an argument list or set
        if ch in "{(":
            depth += 1
        elif ch in "})":
            depth -= 1
        elif ch in "\"'":
            raise s.bad(f"argument {name!r}: quote the whole value, not part of it")
        s.i += 1
    value = s.text[start : s.i].strip()
    if not value:
        raise s.bad(f'argument {name!r} has an empty glob (quote it: {name}="")', start)
    return value


def _quoted(s: _Scanner) -> str:
    quote, start, chars = s.text[s.i], s.i, []
    s.i += 1
    while not s.done():
        ch = s.text[s.i]
        if ch == "\\" and s.i + 1 < len(s.text):
            chars.append(s.text[s.i + 1])
            s.i += 2
            continue
        s.i += 1
        if ch == quote:
            return "".join(chars)
        chars.append(ch)
    raise s.bad(f"unterminated {quote} quote", start)


def render(rule: ParsedRule) -> str:
    """The canonical text of a rule: one spelling per meaning (used by the fingerprint)."""
    text = rule.tool
    if rule.conds:
        text += "(" + ", ".join(_render_cond(c) for c in rule.conds) + ")"
    if rule.unless:
        text += " unless " + ", ".join(render(u) for u in rule.unless)
    return text


def _render_cond(c: Cond) -> str:
    name = f"{c.name}:{c.kind}" if c.kind else c.name
    if c.op in ("absent", "present"):
        return f"{name}=<{c.op}>"
    if c.op == "cmp":
        n = c.number
        if isinstance(n, int):
            return f"{name}{c.cmp}{n}"
        return f"{name}{c.cmp}{int(n) if n.is_integer() and abs(n) < 1e15 else repr(n)}"
    if c.op == "in":
        if c.set_name is not None:
            return f"{name} in ${c.set_name}"
        return f"{name} in [{', '.join(_quote(i) for i in c.items or ())}]"
    glob = _quote(c.glob)
    return f"{name}={c.quant}({glob})" if c.quant else f"{name}={glob}"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
