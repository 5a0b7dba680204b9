"""A tool call's `Deadline`: `asyncio.timeout`'s semantics, and nothing kept alive after it."""

from __future__ import annotations

import asyncio
import gc
import weakref
from contextvars import ContextVar

import pytest

from loomgraph.tools.deadline import Deadline

held: ContextVar[object] = ContextVar("held")


class _Run:
    """Stands for what a run's context variables hold (its scope, its tool context)."""


async def test_a_block_past_its_deadline_raises_timeout_error() -> None:
    deadline = Deadline(0.01)
    with pytest.raises(TimeoutError):
        async with deadline:
            await asyncio.sleep(10)
    assert deadline.expired()


async def test_a_block_within_its_deadline_is_left_alone() -> None:
    deadline = Deadline(10)
    async with deadline:
        await asyncio.sleep(0)
    assert not deadline.expired()


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    entered = asyncio.Event()

    async def call() -> None:
        async with Deadline(10):
            entered.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(call())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_finished_block_keeps_nothing_of_the_context_alive() -> None:
    # asyncio.timeout's cancelled timer keeps a copy of the context until the loop prunes
    # it (or 60 s pass): with it, `run` would still be alive here.
    run = _Run()
    alive = weakref.ref(run)
    token = held.set(run)
    async with Deadline(60):
        pass
    held.reset(token)
    del run
    gc.collect()
    assert alive() is None
