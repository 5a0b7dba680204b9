"""One (user, subject, predicate)'s facts as a history, the same rule on every backend.

A fact row is one thing said about a subject and predicate over an interval of time; the
runs that said it are its *statements* (which session and run, how sure, from when). A row
keeps every statement, so forgetting one session removes only what that session said: the
row goes when its last statement goes, otherwise it keeps what the others said (their
highest confidence, the provenance and start of the earliest). The rows of one subject and
predicate, ordered by when they begin (then by id: the order written), are one chain: each
row is valid until the next begins, and the last is current.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from loomgraph.memory.records import same_object

__all__ = ["Statement", "merged", "place", "relinked", "summary"]


@dataclass(slots=True)
class Statement:
    """One recording of a fact: the session and run that said it, how sure, from when."""

    session_id: str | None
    source_run: str | None
    confidence: float
    at: float  # the time the fact holds from, as this statement gave it

    def same_source(self, other: Statement) -> bool:
        """Whether both come from the same run of the same session (or both from neither)."""
        return (self.session_id, self.source_run) == (other.session_id, other.source_run)


def place(chain: Sequence[tuple[int, str, float]], obj: str, at: float) -> int | None:
    """The id of the row of `chain` — (id, object, valid_from) — that a fact saying `obj`
    from `at` states again, or None when it is a row of its own.

    That is the row in force at `at` when it says the same; else the next row when it says
    the same (known now to hold from `at`). A fact older than the current row so slots into
    the history instead of replacing what is known to hold since."""
    ordered = sorted(chain, key=lambda row: (row[2], row[0]))
    earlier = [row for row in ordered if row[2] <= at]
    later = [row for row in ordered if row[2] > at]
    if earlier and same_object(earlier[-1][1], obj):
        return earlier[-1][0]
    if later and same_object(later[0][1], obj):
        return later[0][0]
    return None


def merged(statements: Sequence[Statement], new: Statement) -> list[Statement]:
    """`statements` with `new`; one from the same run and session is updated instead (the
    higher confidence, the earlier start), so a run saying a fact twice counts once."""
    kept = list(statements)
    for i, old in enumerate(kept):
        if old.same_source(new):
            kept[i] = replace(
                old, confidence=max(old.confidence, new.confidence), at=min(old.at, new.at)
            )
            return kept
    return [*kept, new]


def summary(statements: Sequence[Statement]) -> tuple[float, str | None, str | None, float]:
    """A row's (confidence, session_id, source_run, valid_from) from its statements (at
    least one): the highest confidence, the provenance and start of the earliest."""
    first = min(statements, key=lambda s: s.at)  # min keeps the first written of equal ones
    return max(s.confidence for s in statements), first.session_id, first.source_run, first.at


def relinked(chain: Sequence[tuple[int, float, float | None]]) -> list[tuple[int, float | None]]:
    """The (id, valid_to) changes that make `chain` — one subject and predicate's rows as
    (id, valid_from, valid_to) — a chain again: in the order they begin (then by id), each
    valid until the next begins, the last current. The reopened one comes last (a unique
    index admits at most one current row at any moment)."""
    ordered = sorted(chain, key=lambda row: (row[1], row[0]))
    changes = []
    for i, (row_id, _, valid_to) in enumerate(ordered):
        want = ordered[i + 1][1] if i + 1 < len(ordered) else None
        if valid_to != want:
            changes.append((row_id, want))
    return sorted(changes, key=lambda c: c[1] is None)
