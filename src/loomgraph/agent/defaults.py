"""Default values of the Agent's public signatures, in a module of their own so that building
an Agent does not import the modules that act on them (resuming, recovery, the fleet)."""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_MAX_RECOVERIES", "DEFAULT_QUEUE", "NO_VALUE"]

# Resumes of a crashed or failed run before it becomes a dead letter.
DEFAULT_MAX_RECOVERIES = 3

# The fleet queue a run is submitted to unless another is named.
DEFAULT_QUEUE = "runs"


class _NoValue:
    """The type of `NO_VALUE`: "no answer given" (None is a valid answer)."""

    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE: Any = _NoValue()
