"""Run a node's sub-tasks concurrently, at most `limit` at once, all or nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


async def run_all(jobs: Sequence[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """The jobs' results in order. When one fails, the others are cancelled (none keeps
    running behind a failed node) and its error is raised as it is, not in a group."""
    if len(jobs) == 1:
        return [await jobs[0]()]
    gate = asyncio.Semaphore(limit)

    async def gated(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(gated(job)) for job in jobs]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]
