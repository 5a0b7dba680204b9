"""The time limit of a tool call: the tool runs in a task of its own, and its caller waits for
it with a timer, so the caller gets its answer at the limit whatever the tool does.

A tool awaited inline (under `asyncio.timeout`, as before) could only be stopped by cancelling
the caller's own task and hoping the cancellation came back out: a tool that swallows
`CancelledError` ran on, and its value was reported as a success. `run_with_limit` gives the
tool its own task instead. At the limit the caller stops waiting, cancels the tool's task and
gives it `GRACE` seconds to stop (so the `finally` blocks of a tool that honours the
cancellation have run when the result comes back); a tool still running then is abandoned —
left to finish in the background, with a warning naming it.

`asyncio.timeout` schedules its timer with a copy of the caller's context. A cancelled timer
stays in the event loop's heap until its time comes (60 s by default here) or the loop
prunes cancelled timers, which it does only between iterations: a run whose awaits never
suspend (fast tools, a local model) adds one such timer per tool call, and each one's
context holds the run (its scope, its tool context) until then. The timers here are
scheduled in an empty context instead.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Coroutine
from typing import Any

from loomgraph.tools.strays import Strays

_log = logging.getLogger("loomgraph.tools.registry")

# How long a cancelled tool may take to stop before it is abandoned, in seconds.
GRACE = 0.1

Outcome = tuple[bool, Any]
"""What a tool's task ends with: (True, its value) or (False, the exception it raised)."""

# Python 3.12+ can start a task eagerly: a tool that never waits finishes inside create_task,
# with no trip through the event loop. (Stepping the coroutine by hand instead would run its
# first step as the caller's task: an `asyncio.timeout` or `TaskGroup` it entered there
# would cancel the caller.)
_EAGER = getattr(asyncio, "eager_task_factory", None)
# The tasks of tools cancelled by their caller, until they end.
_abandoned: set[asyncio.Task[Outcome]] = set()

# The timer callback reads no context variable; an empty context keeps nothing alive.
_NO_CONTEXT = contextvars.Context()


async def run_with_limit(
    coro: Coroutine[Any, Any, Any], limit: float | None, name: str, strays: Strays | None = None
) -> Outcome | None:
    """Run a tool's coroutine in a task of its own; its outcome, or None when it was still
    running `limit` seconds later (it is then cancelled, and abandoned if it will not stop:
    counted in `strays` until it ends)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    run = _Run()
    guarded = run.guard(coro)
    task = _EAGER(loop, guarded) if _EAGER is not None else loop.create_task(guarded)
    try:
        if not run.ended:
            # One pass of the loop: the task's first step runs before this one's next, so a
            # tool that does not wait for anything has ended here, with no timer or waiter.
            await asyncio.sleep(0)
        if await run.wait(None if limit is None else started + limit):
            # Ended, but maybe past its limit: an `async def` tool that blocks the loop (a
            # sync call inside it) cannot be cancelled while it does; its value is not given.
            if limit is None or loop.time() - started <= limit:
                return task.result()
            return None
    except asyncio.CancelledError:
        await _stop(task, run, name, "its caller was cancelled", strays)
        raise
    await _stop(task, run, name, f"it ran past its {limit:g} s limit", strays)
    return None


class _Run:
    """One tool call's task and what its caller waits on.

    The caller waits on a future of its own, never on the task: cancelling the caller (its
    run being cancelled) then does not wait for the tool, and the timer only wakes it up. The
    task sets that future itself as it ends, which wakes the caller one pass of the event
    loop sooner than a done-callback would.
    """

    __slots__ = ("ended", "waiter")

    def __init__(self) -> None:
        self.ended = False
        self.waiter: asyncio.Future[None] | None = None

    async def guard(self, coro: Coroutine[Any, Any, Any]) -> Outcome:
        """The tool's task: whatever the tool raises (SystemExit, KeyboardInterrupt, its own
        CancelledError...) is its outcome, and never reaches the event loop."""
        outcome: Outcome
        try:
            outcome = True, await coro
        except BaseException as exc:  # every failure of a tool is its result, nothing escapes
            outcome = False, exc
        self.ended = True
        self._wake()
        return outcome

    async def wait(self, until: float | None) -> bool:
        """Wait until the task has ended or the loop's clock reads `until`; whether it ended."""
        if self.ended:
            return True
        loop = asyncio.get_running_loop()
        self.waiter = waiter = loop.create_future()
        # In an empty context: a cancelled timer keeps nothing of the run alive.
        timer = None if until is None else loop.call_at(until, self._wake, context=_NO_CONTEXT)
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()
        return self.ended

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


async def _stop(
    task: asyncio.Task[Outcome], run: _Run, name: str, why: str, strays: Strays | None
) -> None:
    """Cancel a tool's task and give it GRACE seconds to stop; then abandon it, saying so."""
    if run.ended:
        return
    task.cancel()
    # Held until it ends, however this wait ends: the event loop keeps only weak references.
    _abandoned.add(task)
    task.add_done_callback(_finished)
    if await run.wait(asyncio.get_running_loop().time() + GRACE):
        return
    if strays is not None:
        strays.add(name)
        task.add_done_callback(lambda _: strays.discard(name))
    _log.warning(
        "tool %r was cancelled because %s, and did not stop within %g s: it is abandoned "
        "and runs on in the background",
        name,
        why,
        GRACE,
    )


def _finished(task: asyncio.Task[Outcome]) -> None:
    _abandoned.discard(task)
