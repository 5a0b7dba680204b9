"""The per-call time limit of a tool: `asyncio.timeout`, without keeping the run alive.

`asyncio.timeout` schedules its timer with a copy of the caller's context. A cancelled timer
stays in the event loop's heap until its time comes (60 s by default here) or the loop
prunes cancelled timers, which it does only between iterations: a run whose awaits never
suspend (fast tools, a local model) adds one such timer per tool call, and each one's
context holds the run (its scope, its tool context) until then. `Deadline` schedules its
timer in an empty context instead; otherwise it does what `asyncio.Timeout` does (Python
3.11's semantics): the task is cancelled at the deadline, and the cancellation leaves the
block as `TimeoutError` unless the task was also cancelled from elsewhere.
"""

from __future__ import annotations

import asyncio
import contextvars
from types import TracebackType

# The timer callback reads no context variable; an empty context keeps nothing alive.
_NO_CONTEXT = contextvars.Context()


class Deadline:
    """`async with Deadline(seconds):` — like `asyncio.timeout(seconds)`, for one block."""

    __slots__ = ("_cancelling", "_delay", "_expired", "_handle", "_task")

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._expired = False
        self._handle: asyncio.Handle | None = None
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0

    def expired(self) -> bool:
        """Whether the deadline passed while the block ran."""
        return self._expired

    async def __aenter__(self) -> Deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadline should be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        loop = asyncio.get_running_loop()
        when = loop.time() + self._delay
        if when <= loop.time():
            self._handle = loop.call_soon(self._on_timeout, context=_NO_CONTEXT)
        else:
            self._handle = loop.call_at(when, self._on_timeout, context=_NO_CONTEXT)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        # Ours alone when no other cancellation was requested meanwhile (uncancel() is
        # called whenever the deadline passed, as asyncio.Timeout does).
        if (
            self._expired
            and self._task is not None
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc

    def _on_timeout(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._expired = True
        self._handle = None
