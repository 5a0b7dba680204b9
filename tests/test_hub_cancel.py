"""A follower waiting for a run to move on is cancelled even when the cancel arrives as the
run moves on (Python 3.11's `asyncio.wait_for` returned then, and the cancel was lost)."""

from __future__ import annotations

import asyncio

import pytest

from loomgraph.serve.hub import RunHub


async def test_a_cancel_arriving_with_the_wake_is_not_lost() -> None:
    hub = RunHub()
    waiting = asyncio.create_task(hub.wait_past("run-1", 0, 30.0))
    for _ in range(3):  # into its wait
        await asyncio.sleep(0)
    hub.notify("run-1")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_wake_alone_ends_the_wait() -> None:
    hub = RunHub()
    waiting = asyncio.create_task(hub.wait_past("run-1", 0, 30.0))
    for _ in range(3):
        await asyncio.sleep(0)
    hub.notify("run-1")
    await asyncio.wait_for(waiting, 5.0)
    assert hub.version("run-1") == 1
