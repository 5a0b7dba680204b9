"""`watched`: the copy of a run's data that a hook or an event listener is given, so that what
it changes never reaches the run, its journal or its audit log."""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any, TypeVar

__all__ = ["watched"]

T = TypeVar("T")


def watched(value: T) -> T:
    """A deep copy of `value`. The plain data a run holds is copied by a pickle round trip
    (about four times faster than `copy.deepcopy`, which a hook that reads the whole history
    at every visit pays for); what pickle cannot copy, `copy.deepcopy` does; and a value
    neither can (an object holding a lock, that a node put in an event) is given as its JSON,
    anything else in it as its `repr`, rather than failing the run for its listener."""
    try:
        return pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))  # type: ignore[no-any-return]
    except Exception:
        pass
    try:
        return copy.deepcopy(value)
    except Exception:
        shown: Any = json.loads(json.dumps(value, default=repr))
        return shown  # type: ignore[no-any-return]
