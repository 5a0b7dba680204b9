"""What memory checks in its input before anything is read or written, one rule on every backend.

Text: SQLite cannot encode a lone surrogate and Postgres refuses it and NUL in `text`. Free
text (an episode's prompt, answer and tool names, a fact's fields, a block's text) is stored
with each such character as a visible escape (`\\udcff`, `\\x00`), the same on every backend,
the in-memory one included — a finished run's answer must never fail to be remembered over
it. An id memory looks up again (a session or run id) is refused instead (`MemoryInputError`
naming the field): an escaped id would no longer be the id given.

Free text is also stored in Unicode's composed form (NFC), as the query's words are searched
(`memory.ranking`): "Zoë" typed with a combining diaeresis (NFD) is the same text to a reader,
and must be the same word to every index. Ids are not normalised (an id is kept as given).
"""

from __future__ import annotations

import math
import unicodedata
from datetime import datetime
from typing import Any

from loomgraph.memory.errors import MemoryInputError
from loomgraph.protocols import escaped, id_length_problem, storable

__all__ = [
    "LATEST_TIME",
    "MAX_LIMIT",
    "check_before",
    "check_id",
    "check_limit",
    "check_query",
    "check_time",
    "stored_text",
]

# Epoch seconds a date can be shown for: 1970-01-01 up to the end of year 9999.
LATEST_TIME = 253402300799.0
# The largest LIMIT SQLite and Postgres take (a signed 64-bit integer).
MAX_LIMIT = 2**63 - 1


def stored_text(text: str) -> str:
    """Free text as memory stores it, the one place it is made so: NUL and lone surrogates
    as visible escapes (`protocols.escaped`), then NFC."""
    return unicodedata.normalize("NFC", escaped(text))


def check_id(field: str, value: Any) -> None:
    """Refuse an id (None passes) that is not a str or that no backend can store as it is:
    a NUL, a lone surrogate, or too long to index (`id_length_problem`)."""
    if value is None:
        return
    if not isinstance(value, str):
        raise MemoryInputError(f"{field} must be a str or None, not {type(value).__name__}")
    if "\x00" in value:
        raise MemoryInputError(f"{field} {_shown(value)} contains a NUL character")
    if not storable(value):
        raise MemoryInputError(f"{field} {_shown(value)} holds a lone surrogate (not valid text)")
    if (too_long := id_length_problem(value)) is not None:
        raise MemoryInputError(f"{field} {_shown(value)} is {too_long}")


def check_time(field: str, value: Any) -> float:
    """`value` as epoch seconds, refusing what no date can show (NaN, infinities, before 1970,
    after 9999) and what is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MemoryInputError(f"{field} must be epoch seconds (a number), not {value!r}")
    if not math.isfinite(value) or not 0 <= value <= LATEST_TIME:
        raise MemoryInputError(
            f"{field} must be finite epoch seconds between 0 and {LATEST_TIME:.0f} "
            f"(1970 to 9999), not {value!r}"
        )
    return float(value)


def check_limit(limit: Any) -> int | None:
    """`limit` as given: None (no limit) or an int from 0 (nothing) to `MAX_LIMIT`."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_LIMIT:
        raise MemoryInputError(
            f"limit must be a non-negative int (at most 2**63 - 1) or None, not {limit!r}"
        )
    return limit


def check_query(field: str, value: Any) -> str:
    """A search query: a str (its words are searched)."""
    if not isinstance(value, str):
        raise MemoryInputError(f"{field} must be a str, not {type(value).__name__}")
    return value


def check_before(value: Any) -> float | datetime | None:
    """`forget`'s time bound: None, finite epoch seconds (a number) or a datetime."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MemoryInputError(
            f"before must be epoch seconds (a number) or a datetime, not {type(value).__name__}"
        )
    try:
        bound = float(value)
    except OverflowError:
        raise MemoryInputError("before is an int too large for any time") from None
    if not math.isfinite(bound):  # `inf` would forget everything: `forget(user_id)` says so
        raise MemoryInputError(f"before must be a finite time, not {bound!r}")
    return bound


def _shown(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:79] + "…")
