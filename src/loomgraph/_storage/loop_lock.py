"""An asyncio.Lock per event loop: a lock (and the futures of a connection) belong to the loop
that made them, so a later `asyncio.run()` gets a lock of its own."""

from __future__ import annotations

import asyncio


class LoopLock:
    """The running loop's lock, made on first use in each loop."""

    def __init__(self) -> None:
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def current(self) -> tuple[asyncio.Lock, bool]:
        """The running loop's lock, and whether it is new (first use, or another loop)."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
            return self._lock, True
        return self._lock, False
