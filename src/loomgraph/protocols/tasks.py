"""`finished`: a step that must not be cut off by a cancellation (a write under way)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["finished"]

T = TypeVar("T")


async def finished(step: Awaitable[T]) -> T:
    """Await `step` to its end even when the caller is cancelled meanwhile, then let the
    cancellation go on: what a step began (a commit, a charge) cannot be taken back, and
    one cut off halfway would leave the state it changes behind what happened."""
    import asyncio  # here: the protocols are imported by code that never runs a loop

    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what the caller gets
        raise
