"""An asyncpg pool per event loop, shared by every Postgres backend (which must not import one
another): a pool's connections belong to the loop that made them, so a later `asyncio.run()`
gets a pool of its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any


class LoopPool:
    """Opens the pool on first use in each event loop (once, however many tasks ask)."""

    def __init__(self, open_pool: Callable[[], Awaitable[Any]]) -> None:
        self._open = open_pool
        self._pool: Any = None
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def get(self) -> Any:
        """The running loop's pool."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._pool is not None:
                with contextlib.suppress(Exception):
                    self._pool.terminate()  # the old loop's pool cannot be closed from here
            self._pool, self._lock, self._loop = None, asyncio.Lock(), loop
        if self._pool is None:
            assert self._lock is not None
            async with self._lock:
                if self._pool is None:
                    self._pool = await self._open()
        return self._pool

    async def close(self) -> None:
        """Close the pool; the next use opens a new one."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
