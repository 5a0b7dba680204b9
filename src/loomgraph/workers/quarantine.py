"""Recoveries run alone: a run that crashed its worker once may do it again (a poison run),
and every run beside it would die with it and count a failed recovery of its own. So a
worker advances a crashed run only while no other run is in its hands, and starts no other
run meanwhile: a poison run takes its neighbours down at most once, on its first try.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["Quarantine"]


class Quarantine:
    """Many ordinary runs at once, or one recovery alone; a waiting recovery goes first."""

    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        self._shared = 0
        self._alone = False
        self._waiting_alone = 0

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        """Hold while advancing an ordinary run."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._alone and not self._waiting_alone)
            self._shared += 1
        try:
            yield
        finally:
            async with self._changed:
                self._shared -= 1
                self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        """Hold while advancing a recovery: no other run is in this worker's hands."""
        async with self._changed:
            self._waiting_alone += 1
            try:
                await self._changed.wait_for(lambda: not self._alone and not self._shared)
            finally:
                self._waiting_alone -= 1
            self._alone = True
        try:
            yield
        finally:
            async with self._changed:
                self._alone = False
                self._changed.notify_all()
