"""Taint: which egress tool calls carry text that came from untrusted tool results.

Tool results are untrusted unless their tool is declared `trusted`. Both sides are compared
as `normalise` reads them: NFKC, invisible format characters (zero-width spaces, joiners, BOM)
removed, case-folded, common Cyrillic and Greek lookalikes read as Latin letters, whitespace
collapsed — as the permission matcher's generous readings do. A call is tainted when one of
its argument values (every string, every dict key and every number, as its decimal text, at
any depth) as normalised:

- contains a run of at least LONG_RUN (19) characters that occurs in an untrusted result
  (shorter shared runs of 16 or more are found only sometimes);
- stripped of punctuation at both ends, has at least MIN_TAINT_CHARS (8) characters and occurs
  in an untrusted result as whole words: starting where a word starts there and ending where
  one ends (so `44018822913` in "account no.44018822913." and `fitwell gym` in "pay FitWell
  Gym" are found, `ter2-pro` inside "hunter2-prod" is not);
- has, inside a longer text, a whole-word span of MIN_TAINT_CHARS to 18 characters with a
  digit in it (an account, an IBAN, a phone number) that occurs in an untrusted result as
  whole words (`update_block(text="Landlord: acct 44018822913")`); letters-only words and
  phrases are found inside a longer text only by the long run: replies share them by chance;
- contains an e-mail address or a URL (`scheme://…`, `www.…`, or `host.tld/…`) of any length
  that occurs in an untrusted result as an address or URL.

Each JSON string literal in a result that is spelled with escapes is also read as it decodes,
wherever it stands (a whole JSON result, JSON after a header line, JSON Lines, joined MCP
blocks), so text copied from it with its quotes and newlines is found too. An identifier
printed in groups (`de89 3704 0044 …`, `4401-8822-913`) is also read without its separators,
on both sides, as a model sends it. Shorter values
(a yes, a small number, a common word) never taint: they are too likely to occur by chance. An
egress tool's tainted call is then asked about (or denied) instead of allowed; other tools'
calls are not checked. The gate checks the arguments as sent and as the tool will receive them
(`engine.received.untrusted_in`), so `"4401_8822_913"` for an int parameter is 44018822913.

The run keeps no untrusted text, only pieces of it (a set of normalised strings, each of which
occurs in an untrusted result): every 16-character window at every 4th position, every
whole-word span of 8 to 18 characters, every address and URL, every grouped identifier
without its separators. Noting a result costs time and
memory in proportion to its size (0.1 to 0.35 s and 10 to 50 MB per million characters);
checking a call costs a few set lookups per character of its arguments, however much untrusted
text the run has seen. It is a heuristic: a paraphrased, translated or re-encoded injection is
not recognised.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from loomgraph.protocols.spellings import as_latin, without_invisible
from loomgraph.protocols.tools import ToolHost

# The rule and reason of an egress call's verdict when it carries untrusted text; the reason
# is also added to the question an approval handler is asked about such a call.
TAINT_RULE = "taint:egress"
# (Not "from a tool result" alone: an untrusted MCP server's descriptions count too.)
TAINT_REASON = (
    "its arguments carry untrusted text (from a tool result, an earlier answer, or what an "
    "untrusted MCP server wrote for the model)"
)
# Shorter values (a yes, a number, a common word) are too likely to occur by chance.
MIN_TAINT_CHARS = 8
# Untrusted text is kept as windows of RUN_CHARS at every RUN_STRIDE-th position, and every
# window of an argument is looked up: a shared run of LONG_RUN characters always covers one.
RUN_CHARS = 16
RUN_STRIDE = 4
LONG_RUN = RUN_CHARS + RUN_STRIDE - 1
# Whole-word spans this long or shorter are kept whole (longer ones are found by windows).
_TERM_MAX = LONG_RUN - 1

_WORD = re.compile(r"\w+")
_EDGES = re.compile(r"^\W+|\W+$")
# E-mail addresses, and URLs: with a scheme, starting with www., or a dotted host with a path.
# Each starts only where such a token can start (the look-behinds), so that a long word is not
# rescanned from each of its characters.
_ADDRESS = re.compile(
    r"(?<![\w.+-])[\w.+-]++@[\w-]+(?:\.[\w-]+)+"
    r"|(?<![\w+.-])[a-z][\w+.-]*+://[^\s<>\"'`]+"
    r"|(?<![\w.-])[\w-]++(?:\.[\w-]++)++/[^\s<>\"'`]*"
    r"|(?<![\w.-])www\.[\w-]+(?:\.[\w-]+)+[^\s<>\"'`]*"
)
_TRAILING = ".,;:!?)]}'\""
_DIGIT = re.compile(r"\d")
# A run of groups an identifier is printed in: words with a digit, each after one space,
# hyphen or dot (one group of up to four letters may stand between two: a bank's code in an
# IBAN). Possessive, and starting only where a word starts, so a text is scanned once.
_GROUP = r"[^\W\d]*+\d\w*+"
_GROUPED = re.compile(rf"(?<!\w){_GROUP}(?:[ .\-](?:[^\W\d]{{1,4}}[ .\-])?{_GROUP})++")
_SEPARATOR = re.compile(r"[ .\-]")
# A JSON string literal on one line (JSON writes a newline inside a string as `\n`); one left
# open runs to the line's end, so that no quote is scanned from twice.
_LITERAL = re.compile(r'"(?:[^"\\\n]++|\\[^\n])*+(?:"|\\?(?=\n|\Z))')
# Characters a JSON encoder may write as an escape (all but plain printable ASCII).
_ESCAPABLE = re.compile(r"[^ !#$%()*+,\-.0-9:;=?@A-Z\[\]^_`a-z{|}~]")
_APART = " \u2060 "


def normalise(text: str) -> str:
    """Text as taint compares it: NFKC, invisible format characters removed, case-folded,
    lookalike letters read as Latin, whitespace collapsed."""
    if text.isascii():  # the common case; NFKC and the rest change nothing in ASCII
        return " ".join(text.lower().split())
    text = without_invisible(unicodedata.normalize("NFKC", text))
    text = as_latin(unicodedata.normalize("NFKC", text.casefold()))
    return " ".join(text.split())  # split() collapses whitespace faster than a regex


def values_in(value: Any, names: AbstractSet[str] = frozenset()) -> Iterator[str]:
    """Every string, dict key and number (as decimal text) inside a JSON-shaped value; a key
    in `names` (the parameter names a tool's schema declares) is not text the call carries."""
    stack = [value]  # not recursive: arguments and results may be nested thousands deep
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            try:
                text = str(item)
            except ValueError:  # more digits than Python converts to text
                continue
            yield text
        elif isinstance(item, float):
            if math.isfinite(item):
                # 44018822913.0 reads as the 44018822913 an untrusted text wrote.
                yield str(int(item)) if item.is_integer() else repr(item)
        elif isinstance(item, dict):
            for key, inner in item.items():
                if key not in names:
                    stack.append(key)
                stack.append(inner)
        elif isinstance(item, list | tuple):
            stack.extend(item)


def pieces(text: str) -> set[str]:
    """What is kept of one normalised untrusted text: its windows, its whole-word spans of
    MIN_TAINT_CHARS to 18 characters, its e-mail addresses and URLs, and its grouped
    identifiers written without their separators (`_joined_groups`)."""
    if len(text) < MIN_TAINT_CHARS:
        return _addresses(text)  # most tool results are short: only an address is kept
    found = {text[i : i + RUN_CHARS] for i in range(0, len(text) - RUN_CHARS + 1, RUN_STRIDE)}
    found.update(_terms(text))
    found |= _addresses(text)
    found |= _joined_groups(text)
    return found


def _terms(text: str) -> Iterator[str]:
    """The whole-word spans of MIN_TAINT_CHARS to 18 characters of a normalised text."""
    spans = [match.span() for match in _WORD.finditer(text)]
    return _spans(text, [start for start, _ in spans], [end for _, end in spans])


def _spans(text: str, starts: list[int], ends: list[int]) -> Iterator[str]:
    """The spans of `text` from one of its word `starts` to one of its word `ends` (both in
    order) that are MIN_TAINT_CHARS to 18 characters long."""
    count, first = len(ends), 0
    for start in starts:
        # The spans from this word's start to the word ends 8 to 18 characters on; `first`
        # only moves forward, as the starts do.
        while first < count and ends[first] < start + MIN_TAINT_CHARS:
            first += 1
        last = first
        while last < count and ends[last] <= start + _TERM_MAX:
            yield text[start : ends[last]]
            last += 1


def _joined_groups(text: str) -> set[str]:
    """Each identifier a normalised text prints in groups (`de89 3704 0044 0532 0130 00`,
    `4401-8822-913`) as it is sent, without the separators: its windows, and its runs of
    consecutive groups of MIN_TAINT_CHARS to 18 characters."""
    found: set[str] = set()
    if not _DIGIT.search(text):
        return found
    for match in _GROUPED.finditer(text):
        groups = _SEPARATOR.split(match.group())
        joined = "".join(groups)
        found.update(
            joined[i : i + RUN_CHARS] for i in range(0, len(joined) - RUN_CHARS + 1, RUN_STRIDE)
        )
        starts, ends, at = [], [], 0
        for group in groups:
            starts.append(at)
            at += len(group)
            ends.append(at)
        found.update(_spans(joined, starts, ends))
    return found


def _ungrouped(text: str) -> str:
    """A normalised text with its grouped identifiers written without separators."""
    if not _DIGIT.search(text):
        return text
    return _GROUPED.sub(lambda match: _SEPARATOR.sub("", match.group()), text)


def _addresses(text: str) -> set[str]:
    """The e-mail addresses and URLs in a normalised text."""
    found: set[str] = set()
    # Only the words around an "@", "/" or "www." are searched: a regular expression run
    # over all the text would try each of its characters.
    for mark in ("@", "/", "www."):
        at = text.find(mark)
        while at >= 0:
            start = text.rfind(" ", 0, at) + 1
            end = text.find(" ", at)
            end = len(text) if end < 0 else end
            for match in _ADDRESS.finditer(text, start, end):
                found.add(match.group().rstrip(_TRAILING).lstrip("."))
            at = text.find(mark, end)
    return found


def untrusted_texts(content: str) -> set[str]:
    """The pieces of one untrusted result: of its text and of each JSON string literal in it
    that is spelled with escapes (quotes, newlines, `\\u`...), wherever it stands (a whole JSON
    document, JSON after a header line, JSON Lines, several joined blocks)."""
    found = pieces(normalise(content))
    if "\\" in content:  # no backslash: no escapes
        escaped = []
        for match in _LITERAL.finditer(content):
            literal = match.group()
            if "\\" not in literal:
                continue  # spelled as it reads: the text's own pieces have it
            try:
                text = json.loads(literal)
            except ValueError:  # unterminated, or an escape JSON does not have
                continue
            escaped.append(normalise(text))
        # One pass over them all; what spans the separator (an invisible character, which
        # no normalised text has) can match no argument.
        found |= pieces(_APART.join(escaped))
    return found


class UntrustedText:
    """The untrusted results a run has seen. A result is kept as it came (the run's state holds
    the same string) and cut into pieces only when an egress call is checked, so a run that
    calls no egress tool never pays for the pieces."""

    __slots__ = ("__weakref__", "_pending", "_pieces")  # (an MCP tool host holds it weakly)

    def __init__(self) -> None:
        self._pending: list[str] = []
        self._pieces: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self._pending or self._pieces)

    def add(self, content: str) -> None:
        """Keep one untrusted result."""
        self._pending.append(content)

    def pieces(self) -> set[str]:
        """The pieces of every result kept so far (see `untrusted_texts`)."""
        for content in self._pending:
            self._pieces |= untrusted_texts(content)
        self._pending.clear()
        return self._pieces

    def carried_by(self, value: Any, names: AbstractSet[str] = frozenset()) -> bool:
        """Whether `value` (arguments, an answer) carries untrusted text kept so far
        (`is_tainted`; keys in `names` are the called tool's own parameter names); free when
        nothing untrusted was kept."""
        return bool(self) and is_tainted(value, self.pieces(), names)


def note_result(untrusted: UntrustedText, spec: Mapping[str, Any] | None, content: str) -> None:
    """Remember a tool's result as untrusted text, unless its tool is declared trusted (a
    tool no longer offered counts as untrusted)."""
    if spec is None or not spec.get("trusted"):
        untrusted.add(content)


def note_messages(untrusted: UntrustedText, tools: ToolHost, messages: Iterable[Any]) -> None:
    """Remember what a run starts from and did not write itself as untrusted text: the tool
    results among the messages (as its own results are), and the answers of earlier runs,
    which may quote what their tools returned (a session's history, a checkpoint's
    conversation). The user's own messages stay trusted."""
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        role = message.get("role")
        if role == "tool":
            spec = tools.spec(str(message.get("name", "")))
            note_result(untrusted, spec, str(message.get("content", "")))
        elif role == "assistant" and message.get("content"):
            untrusted.add(str(message["content"]))


def is_tainted(
    args: Any, untrusted: AbstractSet[str], names: AbstractSet[str] = frozenset()
) -> bool:
    """True when an argument value carries untrusted text (see the module docstring); costs a
    few lookups in `untrusted` per character of the arguments. Keys in `names`, the parameter
    names the called tool declares (`parameter_names`), are its schema's, not the call's."""
    for value in values_in(args, names):
        text = normalise(value)
        if _carries(text, untrusted):
            return True
        joined = _ungrouped(text)  # `de89 3704 …` sent for a `de893704…` read
        if joined != text and _carries(joined, untrusted):
            return True
    return False


def _carries(text: str, untrusted: AbstractSet[str]) -> bool:
    """Whether one normalised argument value carries a piece of untrusted text."""
    if len(text) >= MIN_TAINT_CHARS:
        core = _EDGES.sub("", text)  # "(fitwell gym)" is the words "fitwell gym"
        if len(core) >= MIN_TAINT_CHARS and core in untrusted:
            return True
        for start in range(len(text) - RUN_CHARS + 1):
            if text[start : start + RUN_CHARS] in untrusted:
                return True
        # A short term inside a longer text: only one with a digit (an account, an IBAN, a
        # phone number), as words and phrases of 8 to 18 letters are shared by chance.
        if _DIGIT.search(text) and any(
            term in untrusted and _DIGIT.search(term) for term in _terms(text)
        ):
            return True
    return any(address in untrusted for address in _addresses(text))


def parameter_names(schema: Any) -> frozenset[str]:
    """Every property name a JSON schema declares, at any depth: the keys a call of its tool
    spells whatever it carries (so none of them is text the call carries), while an untrusted
    server's own text may spell them too (`timezone` in a time server's description)."""
    names: set[str] = set()
    todo: list[Any] = [schema]
    while todo:  # not recursive: a schema may be nested deeply
        node = todo.pop()
        if isinstance(node, list):
            todo.extend(node)
        elif isinstance(node, dict):
            properties = node.get("properties")
            if isinstance(properties, dict):
                names.update(key for key in properties if isinstance(key, str))
            todo.extend(node.values())
    return frozenset(names)
