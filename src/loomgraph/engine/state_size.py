"""How large a run's state is, in characters of JSON, kept field by field as patches apply,
so the `state_chars` size limit is checked before a transition is journaled.

Each field's size is measured once when the tracker starts (at the run's start or resume)
and then only from patches: an `append` field grows by what is appended, a `replace` field
takes the new value's size, and a `merge` or `add` field is bounded by its old size plus
the patch's (an upper bound, never an underestimate).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from loomgraph.errors import StateError
from loomgraph.graph.state import StateSchema


class StateTooLarge(StateError):
    """A node's patch would take the run's state past `SizeLimits.state_chars`; the patch
    was not applied or journaled, and the run fails."""

    def __init__(self, node: str, size: int, limit: int) -> None:
        super().__init__(
            f"after node {node!r} the run's state would be {size:,} characters of JSON; "
            f"the limit is {limit:,} (size_limits=SizeLimits(state_chars=...))"
        )
        self.node = node
        self.size = size
        self.limit = limit


class StateNotJson(StateError):
    """A node wrote a state field a value that is not plain JSON (NaN, an object in an `any`
    field): no journal can keep it, so the patch was not applied or journaled, and the run
    fails, on every journal alike (typed fields refuse such values before, `StateSchema`)."""

    def __init__(self, node: str, field: str, problem: str) -> None:
        super().__init__(
            f"node {node!r} wrote state field {field!r} a value the journal cannot keep: {problem}"
        )
        self.node = node
        self.field = field
        self.problem = problem


# Made once: json.dumps with options builds a new encoder at every call.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)
# What the journals store, refusing what they refuse; the same sizes as `_COMPACT`.
_JOURNALED = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def json_size(value: Any) -> int:
    """The characters `value` takes as compact JSON (what the journal stores)."""
    return len(_COMPACT.encode(value))


def journaled_size(node: str, field: str, value: Any) -> int:
    """The characters a patch's value takes in the journal; `StateNotJson` when no journal
    can keep it (the in-memory one included, which stores objects as they are)."""
    try:
        return len(_JOURNALED.encode(value))
    except (TypeError, ValueError, RecursionError) as err:
        raise StateNotJson(node, field, str(err)) from None


def check_journaled(node: str, patch: Mapping[str, Any]) -> None:
    """`StateNotJson` for a value of a patch no journal can keep: a child graph's patch, which
    the run's state size does not count (its result reaches the run through its node's)."""
    for name, value in patch.items():
        journaled_size(node, name, value)


class StateSize:
    """The size of one run's state, field by field."""

    __slots__ = ("_fields", "_reducers", "limit", "total")

    def __init__(self, schema: StateSchema, state: Mapping[str, Any], limit: int) -> None:
        self._reducers = {name: f.reducer for name, f in schema.fields.items()}
        self._fields = {name: json_size(value) for name, value in state.items()}
        self.total = sum(self._fields.values())
        self.limit = limit

    def check(self, node: str, patch: Mapping[str, Any]) -> SizeUndo:
        """Count a (checked) patch about to be applied; StateTooLarge if it does not fit,
        `StateNotJson` for a value no journal can keep. What it returns takes the count back
        (`undo`) when the patch is undone."""
        fields, total = self._fields, self.total
        sizes: dict[str, int] = {}
        before: dict[str, int] = {}
        for name, value in patch.items():
            before[name] = old = fields.get(name, 0)
            added = journaled_size(node, name, value)
            size = added if self._reducers.get(name, "replace") == "replace" else old + added
            sizes[name] = size
            total += size - old
        if total > self.limit:
            raise StateTooLarge(node, total, self.limit)
        fields.update(sizes)
        undo, self.total = (before, self.total), total
        return undo

    def undo(self, undo: SizeUndo) -> None:
        """Take back what `check` counted for a patch that was undone."""
        before, self.total = undo
        self._fields.update(before)


SizeUndo = tuple[dict[str, int], int]
"""The sizes of the fields a patch changed, and the total, before it was counted."""
