"""Leases: a run is advanced by one worker at a time when its journal is shared."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator

from loomgraph.protocols import RunLeases

_WORKER = f"{socket.gethostname()}:{os.getpid()}"


@contextlib.asynccontextmanager
async def hold_lease(runtime: RunLeases | None, run_id: str) -> AsyncIterator[None]:
    """Hold the run's lease while the body runs, renewing it; a journal without leases is
    used by one process, and needs none."""
    if runtime is None:
        yield
        return
    owner = f"{_WORKER}:{uuid.uuid4().hex[:8]}"
    await runtime.acquire_lease(run_id, owner)  # raises RunConflict when another worker has it
    body = asyncio.current_task()

    async def renew() -> None:
        while True:
            await asyncio.sleep(runtime.lease_seconds / 3)
            try:
                await runtime.renew_lease(run_id, owner)
            except Exception:
                # The lease is lost (or the journal is gone): stop rather than race another
                # worker that may now own the run.
                if body is not None:
                    body.cancel()
                return

    renewing = asyncio.create_task(renew())
    try:
        yield
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        with contextlib.suppress(Exception):
            await runtime.release_lease(run_id, owner)
