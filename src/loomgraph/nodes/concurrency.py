"""Run a node's sub-tasks concurrently, at most `limit` at once, all or nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from loomgraph.engine.scope import active_scope, stop_request
from loomgraph.protocols import RunStatus, RunStopped
from loomgraph.protocols.runtime import StopDeferred

T = TypeVar("T")


async def run_all(
    jobs: Sequence[Callable[[], Awaitable[T]]], limit: int, *, cancel_on_error: bool = True
) -> list[T]:
    """The jobs' results in order; else the first failure, or the first stop, as it is (an
    approval request before a question; a stop that waits its turn, `StopDeferred`, only
    when no other stopped).

    Once a job has raised (failed, or stopped the run: `RunStopped`, waiting for an approval
    or a value), no job that has not started starts. The jobs under way are never cut in the
    middle of an effect: a stop lets them go on until they finish or stop on their own (their
    effects get their outcomes, a finished one is kept). A failure, with `cancel_on_error`,
    stops them at their next effect boundary (`stop_request`: before an effect's intent is
    journaled), so none keeps running long behind a failed node; without it they finish first.
    """
    if len(jobs) <= 1:  # (`asyncio.wait` refuses an empty set)
        return [await job() for job in jobs]
    gate = asyncio.Semaphore(limit)
    raised: list[BaseException] = []  # in the order the jobs raised
    outer = stop_request.get()

    async def failed_sibling() -> str | None:
        """Why a job must stop before its next effect: a sibling failed, or the run stops."""
        for err in raised:
            if not isinstance(err, RunStopped):
                return f"a sibling task failed: {type(err).__name__}: {err}"
        return await outer() if outer is not None else None

    async def gated(job: Callable[[], Awaitable[T]]) -> T | None:
        async with gate:
            if raised:  # one has failed or stopped: start nothing new
                return None
            if cancel_on_error:  # (in this job's own task: its context is its own copy)
                stop_request.set(failed_sibling)
            try:
                return await job()
            except BaseException as err:
                raised.append(err)
                raise

    tasks = [asyncio.ensure_future(gated(job)) for job in jobs]
    try:
        await asyncio.wait(tasks)
    except asyncio.CancelledError as err:
        # The node's task was cancelled: so are the jobs, with its message (the run's
        # `CancelReason`), and the cancellation goes on once they ended. Not `gather`: its
        # cancellation is rebuilt from the last job, without the message when that one had
        # finished, and the journal then blamed "the caller".
        for task in tasks:
            task.cancel(err.args[0] if err.args else None)
        await asyncio.wait(tasks)
        _retrieved(tasks)
        raise
    _retrieved(tasks)
    if raised:
        failures = [err for err in raised if not isinstance(err, RunStopped)]
        shown = [err for err in raised if not isinstance(err, StopDeferred)]
        # A journaled approval request first: its deadline runs. A question (`interrupt`)
        # that stopped with it journals nothing and is asked again on the resume.
        shown.sort(key=lambda err: getattr(err, "status", None) != RunStatus.AWAITING_APPROVAL)
        if failures and any(isinstance(err, RunStopped) for err in shown):
            _overtaken()
        raise (failures or shown or raised)[0]
    # A job's own BaseException that `gated` did not see (none expected) is raised by result().
    return [task.result() for task in tasks]  # type: ignore[misc]


def _overtaken() -> None:
    """A job's stop (a request journaled for the run to stop at) is overtaken by another's
    failure: the run stops there no more, so the next call that asks stops it instead of
    waiting its turn behind it (`RunScope.asking`)."""
    scope = active_scope.get()
    if scope is not None:
        scope.asking = False


def _retrieved(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Mark the ended jobs' exceptions seen (what matters of them is raised above): else each
    task's finalizer logs "exception was never retrieved" when it is collected, and
    formatting that traceback parses source with `ast` from inside the garbage collector,
    which on CPython 3.11 can break an `ast.parse` under way in the same thread (a
    `SystemError: AST constructor recursion depth mismatch` in an unrelated import)."""
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()
