"""A mark on callbacks that do nothing (the no-op hooks'), so a run need not call them, nor
build what they would be given; a hooks object with no callback of a kind does nothing too."""

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
    """Whether `callback` does nothing: marked `does_nothing`, or a method of an object that
    says it has nothing registered under the method's name (`registered(name)` false: a
    `Hooks` with no callback of that kind)."""
    if getattr(callback, _MARK, False):
        return True
    registered = getattr(getattr(callback, "__self__", None), "registered", None)
    return registered is not None and not registered(callback.__name__)
