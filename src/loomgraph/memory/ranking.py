"""Full-text ranking shared by the backends: the query's search words, and the BM25 ranking
the in-memory backend computes itself (SQLite and Postgres rank in SQL).

The query and the index must fold a word alike, or a stored word is not found by itself: so
the query's words go to each backend as typed (only NFC-normalised, as stored text is, see
`memory.inputs.stored_text`), and each folds them as it folded the stored text — FTS5's
`unicode61` tokenizer on SQLite, `to_tsvector`'s lower-casing on Postgres, `folded` in
memory. A Python case-fold of the query alone spelled other words (`ß` as `ss`, a final
sigma as a medial one) than the SQL indexes hold."""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from itertools import chain
from typing import TypeVar

__all__ = ["MAX_QUERY_TERMS", "bm25_rank", "folded", "query_terms", "stem"]

T = TypeVar("T")

MAX_QUERY_TERMS = 32  # a long prompt must not become a huge OR query

# Where Unicode has combining marks (a test checks none is elsewhere): scanned once, on the
# first search, not at import.
_MARK_PLANES = (range(0x300, 0x20000), range(0xE0100, 0xE01F0))


@functools.cache
def _word() -> re.Pattern[str]:
    """A word: a letter or digit, then letters, digits and combining marks. Python's `\\w`
    has no marks, so `हिन्दी` or `தமிழ்` fell apart at each vowel sign and virama into
    one-letter pieces, which a query drops: no search in such scripts found anything (the
    SQL indexes match a whole word as the phrase of their own pieces)."""
    marks, start, last = [], -2, -2
    for cp in chain(*_MARK_PLANES):
        if unicodedata.category(chr(cp)).startswith("M"):
            if cp != last + 1:
                if start >= 0:
                    marks.append((start, last))
                start = cp
            last = cp
    marks.append((start, last))
    spans = "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in marks)
    return re.compile(rf"[^\W_](?:[^\W_]|[{spans}])*")


_STOP_WORDS = """
a about after again all also am an and any are as at be been before being but by can could
did do does doing for from had has have having he her here hers him his how i if in into is
it its just me more most my no nor not now of off on once only or other our ours out over
own please same she should so some such than that the their theirs them then there these
they this those through to too under until up very was we were what when where which while
who whom why will with would you your yours yourself tell know remember"""
_STOP = frozenset(_STOP_WORDS.split())


def query_terms(text: str) -> list[str]:
    """The distinct search words of a query (NFC, as typed: the backend folds them), no stop
    words, at most 32; words differing only in case are one (the first spelling)."""
    seen: dict[str, str] = {}
    for word in _word().findall(unicodedata.normalize("NFC", text)):
        key = word.lower()  # not casefold: `Straße` and `STRASSE` are two words to FTS5
        if len(key) > 1 and key not in _STOP:
            seen.setdefault(key, word)
    return list(seen.values())[:MAX_QUERY_TERMS]


def folded(text: str) -> list[str]:
    """The in-memory index's words of a text, or of a query's terms: each word case-folded
    and stemmed (the words are found before folding, so a fold that spells a mark, as `İ`'s
    does, never splits a word)."""
    return [stem(word.casefold()) for word in _word().findall(text)]


def stem(word: str) -> str:
    """Plurals to singular, so the in-memory ranking matches `cats` to `cat` as FTS does."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def bm25_rank(terms: Sequence[str], docs: Sequence[tuple[str, float, T]], limit: int) -> list[T]:
    """Docs `(text, time, item)`, in the order stored, matching any term: best BM25 score
    first; on equal scores the newer, then the one stored later (as the SQL backends' row
    ids order them)."""
    wanted = {word for term in terms for word in folded(term)}
    if not wanted or limit <= 0:
        return []
    tokens = [folded(text) for text, _, _ in docs]
    avg = sum(map(len, tokens)) / len(tokens) if tokens else 1.0
    df = Counter(t for toks in tokens for t in set(toks) & wanted)
    scored = []
    for i, ((_, at, item), toks) in enumerate(zip(docs, tokens, strict=True)):
        counts = Counter(t for t in toks if t in wanted)
        score = 0.0
        for term, tf in counts.items():
            idf = math.log(1 + (len(docs) - df[term] + 0.5) / (df[term] + 0.5))
            score += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(toks) / (avg or 1.0)))
        if score > 0:
            scored.append((score, at, i, item))
    scored.sort(key=lambda s: (-s[0], -s[1], -s[2]))
    return [item for _, _, _, item in scored[:limit]]
