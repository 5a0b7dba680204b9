"""The regular expressions of a tool's JSON Schema (an MCP server's, `Tool.from_schema`'s),
on RE2 (google-re2): no backtracking.

jsonschema runs a schema's `pattern` (and `patternProperties` keys) with Python's `re`, a
backtracking engine: a pattern such as `^(a+)+$` takes minutes on forty characters, and `re`
holds the GIL all the while, so no thread or timeout can take the event loop back. Here each
pattern runs on RE2, which compiles it to an automaton and reads the text without ever
backtracking: its work is at most the text's length times the program's size.

The pattern is written in Python's syntax (jsonschema's), so `_translate` rewrites what the two
read differently, and `Regex.search` answers as `re.search` does: `\\d \\w \\s` are the
Unicode classes `re` knows (taken from `re` itself), `\\Z` is the end, `$` also holds before a
final newline, `{,n}` is a repeat. What RE2 cannot run (backreferences, lookaround, atomic
groups and possessive repeats, the inline flags `a L m x`, a repeat past 1,000, a program past
MAX_MEM) `check()` refuses, naming it: checks.py then leaves the tool out at listing time.
RE2's worst case (its DFA gives up and its NFA runs every instruction on every byte) takes
seconds on a long text, so one check of a call's arguments is bounded by a `Meter`: past WORK
a text is reported as too long to check.
"""

from __future__ import annotations

import array
import contextlib
import contextvars
import functools
import re
import sys
import unicodedata
from collections.abc import Iterator
from typing import Any

from loomgraph.errors import LoomgraphError


class PatternUnsupported(LoomgraphError, ValueError):
    """A pattern RE2 cannot run (the message names the construct)."""


class PatternTooCostly(LoomgraphError, ValueError):
    """Checking the arguments would take more work than one call may."""


MAX_MEM = 4 << 20
"""RE2's memory for one pattern (its `max_mem`; about 2/3 go to the program, the rest to the
automata it caches). A pattern whose program does not fit, past about 270,000 instructions,
is refused: `^\\w{1,200}$` fits, `^\\w{1,255}$` does not (Unicode `\\w` is about 1,300)."""
WORK = 40_000_000
"""The work one check of a tool's arguments may do, as RE2 bounds it: for each pattern run,
the text's UTF-8 bytes (plus one) times the size of the pattern's program. RE2's worst case
(measured: 5-20 ns a unit) is then under a second; ordinary patterns on ordinary arguments
use a tiny part of it, and `^[\\w.-]+$` checks a million ASCII characters."""

_TOO_LARGE = f"it is too large: its RE2 program needs more than {MAX_MEM:,} bytes"
_NEVER = r"[^\x00-\x{10ffff}]"  # an assertion that never holds
_B_ON_EMPTY = re.search(r"\B", "") is not None  # Python versions differ on this one
_CHARS = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}  # (\b: in a class)
_REFUSED = {  # (?... groups RE2 does not have
    "?=": "a lookahead (?=...)",
    "?!": "a lookahead (?!...)",
    "?<=": "a lookbehind (?<=...)",
    "?<!": "a lookbehind (?<!...)",
    "?>": "an atomic group (?>...)",
    "?(": "a conditional group (?(...)...)",
    "?P=": "a backreference (?P=...)",
}
_FORMS = {  # what `$`, `\Z` and `\B` become in each form of a pattern (Regex.search picks one)
    "main": (r"\z", r"\z", r"\B"),
    "last": ("(?m:$)", r"\z", r"\B"),  # before a final newline, and no other: `$` holds there too
    "cut": (r"\z", _NEVER, r"\B"),  # on a text without its final newline, where `\Z` cannot hold
    "empty": (r"\z", r"\z", r"\B" if _B_ON_EMPTY else _NEVER),  # on "" (`re` before 3.14)
}
_FLAGS = re.compile(r"\?([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])")
_BRACES = re.compile(r"\{([0-9]*)(,?)([0-9]*)\}")
_OCTAL = re.compile("[0-7]{3}")


class Meter:
    """The work one check may still do, shared by every pattern it runs."""

    __slots__ = ("left",)

    def __init__(self, budget: int = WORK) -> None:
        self.left = budget

    def charge(self, units: int) -> None:
        """Take `units` (raises PatternTooCostly once nothing is left)."""
        self.left -= units
        if self.left < 0:
            raise PatternTooCostly(f"checking it takes more than {WORK:,} units of work")


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


# ------------------------------------------------------------------ Python's syntax to RE2's


@functools.cache
def _classes() -> dict[str, str]:
    """`\\d \\w \\s` as `re` reads them in a str pattern (Unicode), and `\\D \\W \\S`, as the
    ranges of an RE2 class, taken from `re` on every code point so the two cannot disagree; and
    (keys `ad` ... `aS`) their ASCII part, all a text of ASCII characters can meet."""
    codes = array.array("I", range(0x110000)).tobytes()
    every = codes.decode(f"utf-32-{sys.byteorder[0]}e", "surrogatepass")
    found: dict[str, str] = {}
    for name in "dws":
        spans = [m.span() for m in re.finditer(rf"\{name}+", every)]
        starts, ends = [start for start, _ in spans], [end for _, end in spans]
        gaps = [(a, b) for a, b in zip([0, *ends], [*starts, 0x110000], strict=True) if a < b]
        for key, ranges in ((name, spans), (name.upper(), gaps)):
            found[key] = "".join(_range(a, b) for a, b in ranges)
            found["a" + key] = "".join(_range(a, min(b, 128)) for a, b in ranges if a < 128)
    return found


def _range(start: int, end: int) -> str:
    return f"\\x{{{start:x}}}" if end == start + 1 else f"\\x{{{start:x}}}-\\x{{{end - 1:x}}}"


def _translate(pattern: str, form: str, ascii_text: bool) -> str:
    """`pattern` (one `re` compiles) in RE2's syntax with the meaning `re` gives it, in `form`
    (see _FORMS), for any text or (`ascii_text`) a text of ASCII characters. Raises
    PatternUnsupported naming what RE2 has no counterpart of."""
    dollar, end, not_bound = _FORMS[form]
    out: list[str] = []
    i, size, klass, length = 0, len(pattern), False, 0
    while i < size:
        c = pattern[i]
        i += 1
        if c == "\\":
            piece, i = _escape(pattern, i, klass, (end, not_bound), ascii_text)
        elif klass:  # in a class only `]` is special to `re`; `[` is to RE2 (`[[:alpha:]]`)
            klass = c != "]"
            piece = "\\[" if c == "[" else c
        elif c == "[":
            klass, piece = True, "["
            if pattern.startswith("^", i):
                piece, i = piece + "^", i + 1
            if pattern.startswith("]", i):  # a `]` first in the class is a character
                piece, i = piece + "\\]", i + 1
        elif c == "(" and pattern.startswith("?", i):
            piece, i = _group(pattern, i)
        elif c in "*+?{":
            piece = c
            if c == "{":
                braces = _BRACES.match(pattern, i - 1)
                if braces is None or braces.group() == "{}":
                    piece = "\\{"  # `re` reads it as a character
                else:
                    low, comma, high = braces.groups()
                    piece, i = f"{{{low or 0}{comma}{high}}}", braces.end()
            if piece != "\\{" and pattern.startswith("?", i):
                piece, i = piece + "?", i + 1  # lazy or greedy: the same strings match
            elif piece != "\\{" and pattern.startswith("+", i):
                raise PatternUnsupported("a possessive repeat (*+, ++, ?+, {m,n}+)")
        elif c in "]}":
            piece = "\\" + c
        elif c == "$":
            piece = dollar
        else:
            piece = c
        out.append(piece)
        length += len(piece)
        if length > MAX_MEM:  # (Unicode classes take ~10 characters an instruction: no fit)
            raise PatternUnsupported(_TOO_LARGE)
    return "".join(out)


def _escape(
    pattern: str, i: int, klass: bool, assertions: tuple[str, str], ascii_text: bool
) -> tuple[str, int]:
    """The escape at `i` (just past its backslash) in RE2's syntax, and where it ends."""
    c = pattern[i]
    i += 1
    if c in "dwsDWS":
        ranges = _classes()["a" + c if ascii_text else c]
        return (ranges if klass else f"(?-i:[{ranges}])"), i  # (?i) never widens them in `re`
    if not klass and c in "AZbB":
        return {"A": "\\A", "Z": assertions[0], "b": "\\b", "B": assertions[1]}[c], i
    octal = "01234567"
    if c in "xuU":
        width = {"x": 2, "u": 4, "U": 8}[c]
        code, i = int(pattern[i : i + width], 16), i + width
    elif c == "N":
        close = pattern.index("}", i)
        code, i = ord(unicodedata.lookup(pattern[i + 1 : close])), close + 1
    elif c in octal and (klass or c == "0" or _OCTAL.fullmatch(pattern, i - 1, i + 2)):
        # `re` reads up to three octal digits here (`\0`, `\012`, `\101`, `[\1]`)
        digits = c
        while len(digits) < 3 and pattern[i : i + 1] in tuple(octal):
            digits, i = digits + pattern[i], i + 1
        code = int(digits, 8)
    elif c in "0123456789":
        raise PatternUnsupported("a backreference (\\1 ...)")
    elif c in _CHARS:
        code = _CHARS[c]
    elif c.isascii() and c.isalpha():  # (`re` refuses the others before this)
        raise PatternUnsupported(f"the escape \\{c}")
    else:
        code = ord(c)  # an escaped character: itself
    return f"\\x{{{code:x}}}", i


def _group(pattern: str, i: int) -> tuple[str, int]:
    """The `(?...` at `i` (its `?`) in RE2's syntax, and where it ends."""
    for start, what in _REFUSED.items():
        if pattern.startswith(start, i):
            raise PatternUnsupported(what)
    if pattern.startswith("?#", i):  # a comment
        return "", pattern.index(")", i) + 1
    if pattern.startswith("?P<", i):  # a name: nothing is captured here
        return "(?:", pattern.index(">", i) + 1
    flags = _FLAGS.match(pattern, i)
    if flags is None:
        return "(", i
    on, off, then = flags.group(1), flags.group(2) or "", flags.group(3)
    for flag in on + off:
        if flag not in "isu":  # RE2 has i and s alike; u is re's default for str
            raise PatternUnsupported(f"the inline flag {flag} (?{flag}...)")
    on, off = on.replace("u", ""), off.replace("u", "")
    if not (on or off):
        return ("(?:" if then == ":" else ""), flags.end()
    return f"(?{on}{'-' + off if off else ''}{then}", flags.end()


# ------------------------------------------------------------------ RE2


@functools.cache
def _options() -> Any:
    import re2  # only when a schema first has a pattern (a C extension)

    options = re2.Options()
    options.max_mem = MAX_MEM
    options.log_errors = False  # (RE2 would print each refusal on stderr)
    options.never_capture = True  # only whether it matches
    return options


def _compile(translated: str) -> Any:
    import re2

    try:
        return re2.compile(translated, _options())  # (kept in the binding's LRU cache of 128)
    except re2.error as exc:
        said = exc.args[0] if exc.args else ""
        said = said.decode("utf-8", "replace") if isinstance(said, bytes) else str(said)
        if "too large" in said:
            said = _TOO_LARGE
        elif "repetition size" in said:
            said = "a repeat past 1,000 (RE2's limit; nested repeats multiply)"
        raise PatternUnsupported(said[:200]) from None
    except UnicodeEncodeError:
        raise PatternUnsupported("a lone surrogate (not valid Unicode text)") from None


class Regex:
    """One pattern on RE2; `search(text)` is `re.search(pattern, text) is not None`."""

    __slots__ = ("_forms", "pattern", "size")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        try:
            re.compile(pattern)
        except re.error as exc:
            raise PatternUnsupported(f"not a regular expression ({exc})") from None
        except RecursionError:
            raise PatternUnsupported("its groups are nested too deeply") from None
        self._forms: dict[tuple[str, bool], str] = {}
        self.size: int = _compile(self._form("main", False)).programsize  # the largest form

    def _form(self, form: str, ascii_text: bool) -> str:
        key = (form, ascii_text)
        if key not in self._forms:
            self._forms[key] = _translate(self.pattern, form, ascii_text)
        return self._forms[key]

    def _run(self, form: str, text: str) -> bool:
        ascii_text = text.isascii()  # then the ASCII parts of \d \w \s do: a smaller program
        regex = _compile(self._form(form, ascii_text))
        size = len(text) if ascii_text else len(text.encode("utf-8", "surrogatepass"))
        (_meter.get() or Meter()).charge((size + 1) * regex.programsize)
        return regex.search(text) is not None

    def search(self, text: str) -> bool:
        """Whether the pattern matches somewhere in `text`, as `re.search` says."""
        if not text:
            return self._run("empty", text)
        if text.endswith("\n"):
            if text.find("\n") == len(text) - 1:
                return self._run("last", text)
            # Other newlines too, where RE2's multi-line `$` would also hold: `$` at the end,
            # or the text without the newline with `$` at its end. (Not seen: a match that
            # reads that newline after a `$` before it, such as `a$\n`.)
            return self._run("main", text) or self._run("cut", text[:-1])
        return self._run("main", text)


@functools.lru_cache(maxsize=64)
def compiled(pattern: str) -> Regex:
    """`pattern` on RE2 (raises PatternUnsupported naming what RE2 cannot run), translated at
    most once while it is among the last 64 used."""
    return Regex(pattern)


def check(pattern: str) -> int:
    """The size of RE2's program for `pattern`, in instructions (raises PatternUnsupported
    naming what RE2 cannot run)."""
    return compiled(pattern).size
