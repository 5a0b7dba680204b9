"""`repeat`: an action run every few seconds until told to stop, an outage logged and tried
again at the next turn — the loop of a worker's and a server's look for runs whose approval
request expired."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["repeat"]


async def repeat(
    action: Callable[[], Awaitable[object]], every: float, stop: asyncio.Event, log: logging.Logger
) -> None:
    """Run `action` now and every `every` seconds until `stop` is set; an exception it raises
    (the journal unreachable) is logged on `log` and the next turn tries again."""
    while not stop.is_set():
        try:
            await action()
        except Exception:
            log.warning("a periodic look failed; trying again in %.1f s", every, exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
