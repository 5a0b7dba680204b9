"""Run a node's sub-tasks concurrently, at most `limit` at once, all or nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


async def run_all(
    jobs: Sequence[Callable[[], Awaitable[T]]], limit: int, *, cancel_on_error: bool = True
) -> list[T]:
    """The jobs' results in order; the first error is raised as it is, not in a group.

    With `cancel_on_error`, one failure cancels the others, so none keeps running behind a
    failed node. Without it, the others finish first: right for side effects already under
    way, such as the sibling tool calls of a call that stopped the run for an approval.
    """
    if len(jobs) == 1:
        return [await jobs[0]()]
    gate = asyncio.Semaphore(limit)

    async def gated(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    if not cancel_on_error:
        done = await asyncio.gather(*(gated(job) for job in jobs), return_exceptions=True)
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
        return done  # type: ignore[return-value]

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(gated(job)) for job in jobs]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]
