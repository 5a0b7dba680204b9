"""`finished`: a step that must not be cut off by a cancellation (a write under way);
`stops_the_task`: whether a cancellation is the running task's own or one that code raised;
`CancelReason`: who cancelled a run's task, carried by the cancellation itself; `within`: an
await bounded in time that never swallows a cancel."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["CancelReason", "cancel_reason", "finished", "stops_the_task", "within"]

T = TypeVar("T")


async def finished(step: Awaitable[T]) -> T:
    """Await `step` to its end even when the caller is cancelled meanwhile (once or again and
    again), then let the cancellation go on: what a step began (a commit, a charge) cannot be
    taken back, and one cut off halfway would leave the state it changes behind what
    happened."""
    import asyncio  # here: the protocols are imported by code that never runs a loop

    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            # A caller cancelling again (a timeout, then a task group's teardown) must not
            # cut the step off either; the first cancellation is raised once it ends.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what the caller gets
        raise


async def within(step: Awaitable[T], timeout: float | None) -> T:
    """`step`'s result within `timeout` seconds (`TimeoutError` beyond; None: no bound). Not
    `asyncio.wait_for`: on Python 3.11 it returns the result of a step that finished as a
    cancel arrived, and the cancel is lost (a run's consumer gone, a server stopping)."""
    import asyncio  # here, as in `finished`

    async with asyncio.timeout(timeout):
        return await step


def stops_the_task(err: BaseException) -> bool:
    """True for the cancellation of the running task (by its caller, its lease holder, a
    time limit around it) or the closing of its coroutine; False for a `CancelledError` or
    `GeneratorExit` that the code it awaited raised itself (a node, a tool, a hook)."""
    import asyncio

    if not isinstance(err, asyncio.CancelledError | GeneratorExit):
        return False
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no event loop runs: the coroutine is being closed
        return True
    return task is None or (isinstance(err, asyncio.CancelledError) and task.cancelling() > 0)


@dataclass(frozen=True, slots=True)
class CancelReason:
    """Why a run's task is cancelled, given as the cancellation's message
    (`task.cancel(CancelReason("cancelled by alice"))`): the run journals `text` as its
    reason. A typed message, so that another library's text message is never taken for it."""

    text: str


CALLER_CANCELLED = "cancelled by the caller"


def cancel_reason(err: BaseException) -> str:
    """The reason a cancelled run journals: its `CancelReason`'s text, else that its caller
    cancelled it."""
    args = err.args
    if args and isinstance(args[0], CancelReason):
        return args[0].text
    return CALLER_CANCELLED
