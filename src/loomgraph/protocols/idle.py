"""A mark on callbacks that do nothing (the no-op hooks'), so a run need not call them, nor
build what they would be given."""

from __future__ import annotations

from typing import Any, TypeVar

_F = TypeVar("_F")

# Lower case: an attribute set on the function (a bound method reads its function's).
_MARK = "__loomgraph_does_nothing__"


def does_nothing(callback: _F) -> _F:
    """Mark a callback that does nothing whatever it is given; returns it unchanged."""
    setattr(callback, _MARK, True)
    return callback


def is_idle(callback: Any) -> bool:
    """Whether `callback` is marked `does_nothing`."""
    return bool(getattr(callback, _MARK, False))
