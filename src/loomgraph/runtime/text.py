"""Text the journals keep in plain text columns, made the same on every backend.

SQLite cannot encode a lone surrogate as UTF-8 and Postgres refuses both a lone surrogate
and NUL in `text`. A reason (free text loomgraph stores for people) is made storable by one
rule, on every backend, the in-memory one included; an id is refused instead (`JournalIdError`)
before anything is written: an id is looked up again, and an escaped one would no longer be
the id given. JSON columns need neither: `codec.dumps` writes both as `\\u` escapes, which
read back as the value written.
"""

from __future__ import annotations

from loomgraph.protocols import RunRecord, Transition, escaped, id_length_problem, storable
from loomgraph.runtime.errors import JournalIdError

# The ids a journal indexes (a run's, and a user's for her runs; a run's parent, which is
# a run id): the ones whose length an index entry limits (`id_length_problem`).
INDEXED_IDS = frozenset({"run_id", "user_id", "parent_run_id"})

__all__ = [
    "INDEXED_IDS",
    "check_id",
    "check_run_ids",
    "check_transition_ids",
    "storable",
    "storable_reason",
]


def storable_reason(text: str) -> str:
    """`text` with each lone surrogate written as its escape (`\\udcff`) and each NUL as
    `\\x00`, visibly: the same text on every backend. Other text (and a non-str a caller
    passed despite the annotation) is returned as it is."""
    return escaped(text) if isinstance(text, str) else text


def check_id(field: str, value: str | None) -> None:
    """Refuse an id no backend can store as it is, or one a journal indexes (`INDEXED_IDS`)
    too long to index (`id_length_problem`; `JournalIdError` naming `field`), and one that is
    no text at all (a TypeError naming `field`, not one from deep in a check)."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{field} must be a str or None, got {type(value).__name__} {value!r:.60}")
    if value is not None and not storable(value):
        raise JournalIdError(field, value)
    if value is not None and field in INDEXED_IDS and id_length_problem(value) is not None:
        raise JournalIdError(field, value)


def check_run_ids(run: RunRecord) -> None:
    """Refuse a run whose ids or graph name cannot be stored, before anything is written."""
    check_id("run_id", run.run_id)
    check_id("graph_name", run.graph_name)
    check_id("graph_hash", run.graph_hash)
    check_id("user_id", run.user_id)
    check_id("session_id", run.session_id)
    check_id("parent_run_id", run.parent_run_id)


def check_transition_ids(t: Transition) -> None:
    """Refuse a transition whose node names cannot be stored."""
    check_id("node", t.node)
    check_id("next_node", t.next_node)
