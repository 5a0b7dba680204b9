"""The regular expressions of an MCP server's schemas, matched in time linear in the text.

jsonschema runs a schema's `pattern` (and `patternProperties` keys) with Python's `re`, a
backtracking engine: a pattern such as `^(a+)+$` takes minutes on forty characters, and `re`
holds the GIL all the while, so no thread or timeout can take the event loop back. A
server's schema is another program's text and the model's arguments follow what a prompt
says, so here each such pattern is compiled to an automaton and run as a set of states over
the text (Thompson's construction): never more than one pass, whatever the pattern.

What the engine does not take (backreferences, lookaround, atomic groups and possessive
repeats, inline flags, repeats written out past MAX_STATES) `check()` refuses, naming it:
checks.py then leaves the tool out at listing time. The work of one check of a call's
arguments is bounded by a `Meter` (`metered()`): past WORK a text is reported as too long
to check, so a call costs the event loop at most about a second.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re
from collections.abc import Iterator
from typing import Any

from loomgraph.errors import LoomgraphError


class PatternUnsupported(LoomgraphError, ValueError):
    """A pattern this engine cannot run (the message names the construct)."""


class PatternTooCostly(LoomgraphError, ValueError):
    """Checking the arguments would take more work than one call may."""


MAX_STATES = 30_000
"""The automaton of one pattern may have this many states (repeats such as `{1,1000}` are
written out); a larger one is refused."""
WORK = 2_000_000
"""The work one check of a tool's arguments may do: a character read costs 1, a state
visited or built 2. About a second of Python; ordinary arguments need a tiny part of it."""
_CACHE = 4096  # remembered steps per pattern
_CACHE_STATES = 100_000  # and the states they hold
_DEPTH = 100  # group nesting

_WORD = re.compile(r"\w")
_B_ON_EMPTY = re.search(r"\B", "") is not None  # Python versions differ on this one
_BRACES = re.compile(r"\{([0-9]*)(,?)([0-9]*)\}")
# Assertions: ^ and \A, \Z, $, \b, \B.
_START, _END, _DOLLAR, _BOUND, _NOBOUND = range(5)


class Meter:
    """The work one check may still do, shared by every pattern it runs."""

    __slots__ = ("left",)

    def __init__(self, budget: int = WORK) -> None:
        self.left = budget

    def charge(self, steps: int) -> None:
        """Take `steps` (raises PatternTooCostly once nothing is left)."""
        self.left -= steps
        if self.left < 0:
            raise PatternTooCostly(f"checking it takes more than {WORK:,} steps")


_meter: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("mcp_meter", default=None)


@contextlib.contextmanager
def metered() -> Iterator[Meter]:
    """A block whose pattern checks share one `Meter`."""
    meter = Meter()
    token = _meter.set(meter)
    try:
        yield meter
    finally:
        _meter.reset(token)


# ------------------------------------------------------------------ parsing


def _parse(pattern: str) -> Any:
    """The pattern as a tree of tuples: ("char", matcher), ("assert", kind), ("cat", [...]),
    ("alt", [...]), ("repeat", node, min, max or None). Only patterns `re` compiles come
    here, so what is not recognised is refused, never guessed."""
    parser = _Parser(pattern)
    node = parser.alternation(0)
    if parser.i != len(pattern):
        raise PatternUnsupported(f"cannot read it past character {parser.i}")
    return node


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.text[j] if j < len(self.text) else ""

    def alternation(self, depth: int) -> Any:
        if depth > _DEPTH:
            raise PatternUnsupported("its groups are nested too deeply")
        branches = [self.sequence(depth)]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.sequence(depth))
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def sequence(self, depth: int) -> Any:
        items: list[Any] = []
        while self.peek() not in ("", "|", ")"):
            c = self.peek()
            if c in "*+?" or (c == "{" and self.quantifier() is not None):
                items[-1] = self.repeat(items[-1])
                continue
            self.i += 1
            if c == "(":
                node = self.group(depth)
                if node is None:  # a comment
                    continue
                items.append(node)
            elif c == "[":
                items.append(_char(self.text[self.i - 1 : self.klass()]))
            elif c == "\\":
                items.append(self.escape())
            elif c == "^":
                items.append(("assert", _START))
            elif c == "$":
                items.append(("assert", _DOLLAR))
            elif c == ".":
                items.append(_char("."))
            else:
                items.append(_char(re.escape(c)))
        return ("cat", items)

    def quantifier(self) -> tuple[int, int | None, int] | None:
        """`{m,n}` at the cursor as (min, max, its length), or None when `re` reads the
        brace as a plain character."""
        found = _BRACES.match(self.text, self.i)
        if found is None or found.group(0) == "{}":
            return None
        low, comma, high = found.groups()
        if not comma:
            high = low
        return int(low or 0), (int(high) if high else None), len(found.group(0))

    def repeat(self, node: Any) -> Any:
        c = self.peek()
        if c == "{":
            quantified = self.quantifier()
            assert quantified is not None
            low, high, size = quantified
            self.i += size
        else:
            low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
            self.i += 1
        if self.peek() == "+":
            raise PatternUnsupported("a possessive repeat (*+, ++, ?+, {m,n}+)")
        if self.peek() == "?":
            self.i += 1  # lazy or greedy: the same strings match somewhere
        return ("repeat", node, low, high)

    def group(self, depth: int) -> Any:
        if self.peek() != "?":
            return self.close(self.alternation(depth + 1))
        self.i += 1
        c, d = self.peek(), self.peek(1)
        if c == ":":
            self.i += 1
        elif c == "P" and d == "<":
            self.i = self.text.index(">", self.i) + 1
        elif c == "#":
            self.i = self.text.index(")", self.i) + 1
            return None
        else:
            what = {
                "=": "a lookahead (?=...)",
                "!": "a lookahead (?!...)",
                "<": "a lookbehind (?<=...)",
                ">": "an atomic group (?>...)",
                "(": "a conditional group (?(...)...)",
                "P": "a backreference (?P=...)",
            }.get(c, "inline flags (?...)")
            raise PatternUnsupported(what)
        return self.close(self.alternation(depth + 1))

    def close(self, node: Any) -> Any:
        if self.peek() != ")":
            raise PatternUnsupported("an unclosed group")
        self.i += 1
        return node

    def klass(self) -> int:
        """Skip a character class (the cursor is past its `[`); return where it ends."""
        if self.peek() == "^":
            self.i += 1
        if self.peek() == "]":  # a `]` first in the class is a character
            self.i += 1
        while self.peek() not in ("]", ""):
            self.i += 2 if self.peek() == "\\" else 1
        self.i += 1
        return self.i

    def escape(self) -> Any:
        start = self.i - 1
        c = self.peek()
        self.i += 1
        assertion = {"A": _START, "Z": _END, "b": _BOUND, "B": _NOBOUND}.get(c)
        if assertion is not None:
            return ("assert", assertion)
        if c in "xuU":
            self.i += {"x": 2, "u": 4, "U": 8}[c]
        elif c == "N":
            self.i = self.text.index("}", self.i) + 1
        elif c == "0":
            while self.i - start < 4 and self.peek() in tuple("01234567"):
                self.i += 1
        elif c in "123456789":
            octal = "01234567"
            if c in octal and self.peek() in tuple(octal) and self.peek(1) in tuple(octal):
                self.i += 2
            else:
                raise PatternUnsupported("a backreference (\\1 ...)")
        return _char(self.text[start : self.i])


def _char(source: str) -> Any:
    return ("char", source)


def _size(node: Any) -> int:
    """How many states `Regex` makes of `node` (at most MAX_STATES + 1: counting stops)."""
    kind = node[0]
    if kind in ("char", "assert"):
        return 1
    if kind in ("cat", "alt"):
        total = int(kind == "alt")
        for item in node[1]:
            total += _size(item)
            if total > MAX_STATES:
                break
        return total
    _, body, low, high = node
    each = _size(body) + 1  # a copy of the body, and its split (or its count)
    copies = low + 1 if high is None else high
    return min(each * int(copies), MAX_STATES + 1)


def check(pattern: str) -> Any:
    """`pattern` read (raises PatternUnsupported naming what this engine cannot run), cheaply:
    nothing is built, so a listing of many patterns costs little."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise PatternUnsupported(f"not a regular expression ({exc})") from None
    except RecursionError:
        raise PatternUnsupported("its groups are nested too deeply") from None
    tree = _parse(pattern)
    if _size(tree) > MAX_STATES:
        raise PatternUnsupported(f"it needs more than {MAX_STATES:,} states (a large repeat)")
    return tree


# ------------------------------------------------------------------ the automaton


class Regex:
    """One pattern as a Thompson automaton; `search` is `re.search(pattern, text) is not
    None`, in one pass over `text` with the steps it took remembered."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        # State i: ("char", test, next) | ("split", [next, ...]) | ("assert", kind, next)
        # | ("match",).
        tree = check(pattern)
        (_meter.get() or Meter()).charge(2 * _size(tree))
        self.states: list[Any] = [("match",)]
        self.start = self._emit(tree, 0)
        self.steps: dict[Any, Any] = {}
        self.held = 0  # states in the remembered steps

    def _new(self, state: Any) -> int:
        self.states.append(state)
        return len(self.states) - 1

    def _emit(self, node: Any, then: int) -> int:
        kind = node[0]
        if kind == "char":
            # One character's test is `re`'s own, on a pattern of one character: classes,
            # escapes and Unicode rules are exactly jsonschema's, with nothing to backtrack.
            test = re.compile(node[1]).fullmatch
            if node[1].startswith("\\") and test("") is not None:  # an escape `re` added later
                raise PatternUnsupported(f"an assertion this engine does not know: {node[1]}")
            return self._new(("char", test, then))
        if kind == "assert":
            return self._new(("assert", node[1], then))
        if kind == "cat":
            for item in reversed(node[1]):
                then = self._emit(item, then)
            return then
        if kind == "alt":
            return self._new(("split", [self._emit(b, then) for b in node[1]]))
        _, body, low, high = node
        if high is None:  # a loop: the split goes into the body, or on
            loop = self._new(("split", []))
            self.states[loop] = ("split", [self._emit(body, loop), then])
            start = loop
        else:
            start = then
            for _ in range(high - low):
                start = self._new(("split", [self._emit(body, start), then]))
        for _ in range(low):
            start = self._emit(body, start)
        return start

    def _closure(
        self, kernel: frozenset[int], at: tuple[bool, bool, str | None, bool], meter: Meter
    ) -> Any:
        """Every state reachable from `kernel` and the start without reading, where `at` is
        (at the start, the previous character is a word character, the next character or
        None at the end, the next is a final newline); True when one is the match."""
        first, prev_word, nxt, final_nl = at
        next_word = nxt is not None and _WORD.fullmatch(nxt) is not None
        empty = first and nxt is None
        seen: set[int] = set()
        todo = [self.start, *kernel]
        reading: list[int] = []
        while todo:
            i = todo.pop()
            if i in seen:
                continue
            seen.add(i)
            state = self.states[i]
            kind = state[0]
            if kind == "match":
                return True
            if kind == "char":
                reading.append(i)
            elif kind == "split":
                todo.extend(state[1])
            else:
                test = state[1]
                if test == _START:
                    holds = first
                elif test == _END:
                    holds = nxt is None
                elif test == _DOLLAR:
                    holds = nxt is None or final_nl
                elif empty:
                    holds = _B_ON_EMPTY and test == _NOBOUND
                else:
                    holds = (prev_word != next_word) == (test == _BOUND)
                if holds:
                    todo.append(state[2])
        meter.charge(2 * len(seen))
        return reading

    def search(self, text: str) -> bool:
        """Whether the pattern matches somewhere in `text`."""
        meter = _meter.get() or Meter()
        meter.charge(len(text) + 1)
        steps, states = self.steps, self.states
        kernel: frozenset[int] = frozenset()
        prev_word = False
        last = len(text) - 1
        for i, c in enumerate(text):
            key = (kernel, i == 0, prev_word, c, i == last and c == "\n")
            found: Any = steps.get(key)
            if found is None:
                reading = self._closure(kernel, key[1:], meter)
                if reading is True:
                    found = (True, False)
                else:
                    moved = frozenset(states[s][2] for s in reading if states[s][1](c))
                    found = (moved, _WORD.fullmatch(c) is not None)
                    self.held += len(moved)
                if len(steps) < _CACHE and self.held < _CACHE_STATES:
                    steps[key] = found
            if found[0] is True:
                return True
            kernel, prev_word = found
        return self._closure(kernel, (not text, prev_word, None, False), meter) is True


@functools.lru_cache(maxsize=16)
def compiled(pattern: str) -> Regex:
    """The automaton of `pattern` (raises PatternUnsupported naming what it cannot run), built
    at most once while it is among the last 16 used."""
    return Regex(pattern)
