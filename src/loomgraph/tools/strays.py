"""Tool calls abandoned at their limit that are still running, counted per tool.

A thread cannot be killed, and a task that swallows its cancellation cannot be stopped: a
call abandoned at its time limit runs on in the background until the tool returns. A tool
that hangs on every call used to leave one more thread (or task) behind per call, for ever,
until a long-lived process could start no thread at all, and then the journal's and the
audit log's own thread hops failed too. `ToolRegistry` counts each tool's strays here and
refuses a call of a tool that has `max_abandoned` of them still running (docs/tools.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

DEFAULT_MAX_ABANDONED = 8
"""A tool's abandoned calls that may run on at once before its calls are refused."""


def check_max_abandoned(value: object) -> int:
    """`value` as a count of abandoned calls, or ValueError naming `max_abandoned`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_abandoned must be a whole number of calls >= 1, not {value!r}")
    return value


class Strays:
    """How many abandoned calls of each tool are still running; threads and the event loop
    both update it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}

    def count(self, tool: str) -> int:
        """The abandoned calls of `tool` that have not returned yet."""
        return self._running.get(tool, 0)

    def add(self, tool: str) -> None:
        """One more call of `tool` runs on after its caller stopped waiting."""
        with self._lock:
            self._running[tool] = self._running.get(tool, 0) + 1

    def discard(self, tool: str) -> None:
        """An abandoned call of `tool` has returned."""
        with self._lock:
            left = self._running.get(tool, 0) - 1
            if left > 0:
                self._running[tool] = left
            else:
                self._running.pop(tool, None)


class ThreadCall:
    """One sync tool call in a worker thread: counted as a stray if its caller stops waiting
    before the function returns, and uncounted when it does."""

    __slots__ = ("_done", "_lock", "_stray", "_strays", "_tool")

    def __init__(self, strays: Strays, tool: str) -> None:
        self._strays, self._tool = strays, tool
        self._lock = threading.Lock()
        self._done = self._stray = False

    def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Call `fn` (in the worker thread); whatever it does, note that it returned."""
        try:
            return fn(*args, **kwargs)
        finally:
            with self._lock:
                self._done = True
                if self._stray:
                    self._strays.discard(self._tool)

    def abandon(self) -> None:
        """The caller stopped waiting: a stray from now on, unless the function returned."""
        with self._lock:  # held while counting: the thread's uncount cannot come first
            if not self._done:
                self._stray = True
                self._strays.add(self._tool)
