"""A page of a user's runs, newest first, and the cursor that says where the next one starts.

A page's cursor is the run id of its last run: the caller was shown that id, so the cursor
tells them nothing they did not know (a journal row number did: the gap between two of a
user's cursors counted the runs other users started between theirs). The store looks the
run up among the caller's own runs and lists the runs that started before it: nothing is
kept between two pages, so a cursor is good on any server of the deployment, and after a
restart, for as long as its run is in the journal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from loomgraph.protocols import RunRecord
from loomgraph.serve.errors import BadRequest

__all__ = [
    "EVERYONE",
    "MAX_CURSOR",
    "Everyone",
    "RunPage",
    "UnknownCursor",
    "cursor_number",
    "cursor_run_id",
]

# The largest whole number a query or path parameter takes (a checkpoint's seq, a limit):
# the journal's integers are 64-bit signed in SQLite and Postgres.
MAX_CURSOR = 2**63 - 1


class Everyone(enum.Enum):
    """Whose runs a read takes in place of a user id: every user's, for an approver's
    answers and the requests waiting for one (`Service.approvals`)."""

    EVERYONE = "everyone"


EVERYONE = Everyone.EVERYONE


def cursor_number(raw: str) -> int | None:
    """The whole number `raw` spells in ASCII digits, within the journal's integers; None for
    any other text (`int` also reads "²", " 1", "1_0")."""
    if not (raw.isascii() and raw.isdigit()):
        return None
    number = int(raw)
    return number if number <= MAX_CURSOR else None


class UnknownCursor(BadRequest):
    """A listing's cursor that names no run of the caller's (of this agent): one this server
    never gave them. Another user's run is refused exactly as a run that does not exist."""

    def __init__(self, cursor: str) -> None:
        super().__init__(f"cursor {cursor!r} is not one this server gave: it names no run of yours")
        self.cursor = cursor


def cursor_run_id(cursor: str) -> str:
    """The run id a cursor names; `UnknownCursor` for text no run id is (empty, or holding
    NUL or a lone surrogate, which no journal keeps), before any query sees it."""
    if not cursor or "\x00" in cursor:
        raise UnknownCursor(cursor)
    try:
        cursor.encode()
    except UnicodeEncodeError:
        raise UnknownCursor(cursor) from None
    return cursor


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of a user's runs, newest first, and the cursor of the next page (None: last):
    the run id of this page's last run."""

    runs: list[RunRecord]
    cursor: str | None
