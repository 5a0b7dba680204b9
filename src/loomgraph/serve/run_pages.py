"""A page of a user's runs, newest first, and the cursors that say where the next one starts."""

from __future__ import annotations

from dataclasses import dataclass

from loomgraph.protocols import RunRecord

__all__ = ["MAX_CURSOR", "RunPage", "cursor_number", "cursor_position"]

# A cursor is the number of the last run of a page: a row number of the journal's `runs` (a
# 64-bit signed integer in SQLite and Postgres), or the number the in-memory store gave a run
# (`MemoryStore`): never more than this. A run's number never changes, so a run started
# between two pages moves none of the older ones to the next page.
MAX_CURSOR = 2**63 - 1


def cursor_number(cursor: str) -> int | None:
    """The number a cursor this store gives stands for; None for one it cannot have given
    (not ASCII digits: `int` also reads "²", " 1", "1_0"; or past the journal's integers)."""
    if not (cursor.isascii() and cursor.isdigit()):
        return None
    number = int(cursor)
    return number if number <= MAX_CURSOR else None


def cursor_position(cursor: str) -> int:
    """The number a cursor this store gave stands for; ValueError for any other."""
    number = cursor_number(cursor)
    if number is None:
        raise ValueError(f"cursor {cursor!r} is not one this store gave")
    return number


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of a user's runs, newest first, and the cursor of the next page (None: last)."""

    runs: list[RunRecord]
    cursor: str | None
