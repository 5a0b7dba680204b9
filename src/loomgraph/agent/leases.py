"""Leases: a run is advanced by one worker at a time when its journal is shared.

An owner is `host:pid:start:nonce`: the host name, the process id, the process's start time
(`ticks@boot.pidns`: field 22 of `/proc/<pid>/stat`, the boot id and the pid namespace; empty
where `/proc` is missing) and a nonce per holding. On the same host (same boot and pid
namespace) a lease whose process is gone, or whose pid now belongs to a process started at
another time, is taken over at once; any other lease is left to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

from loomgraph.protocols import RunLeases
from loomgraph.protocols.runtime import Lease, current_fence
from loomgraph.runtime.errors import LeaseLost, RunConflict

_log = logging.getLogger(__name__)
_HOST = socket.gethostname()


def process_start(pid: int) -> str | None:
    """When a process started (`ticks@boot.pidns`), or None when it does not exist or this
    platform has no `/proc`."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces and ")"
    return f"{fields[19]}@{_scope()}"  # fields[0] is field 3; starttime is field 22


def _scope() -> str:
    """This boot and pid namespace: the pids of other boots or namespaces are not ours."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()[:8]
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return "?"
    return f"{boot}.{namespace}"


_WORKER = f"{_HOST}:{os.getpid()}:{process_start(os.getpid()) or ''}"

# Holdings of this process that ended without giving their lease back (the journal could not
# be reached then): nothing advances their runs any more, so they are taken over at once.
_ended: set[str] = set()


def owner_is_dead(owner: str) -> bool:
    """True when `owner` is a process of this host (boot, pid namespace) that is gone, or
    whose pid now belongs to a process started at another time; False when unsure."""
    parts = owner.split(":")
    if len(parts) == 4:
        host, pid, start, _ = parts
    elif len(parts) == 3:  # an owner named before start times were recorded
        (host, pid, _), start = parts, ""
    else:
        return False
    if host != _HOST or not pid.isdigit():
        return False
    if start:
        if start.partition("@")[2] != _scope():
            return False  # another boot or pid namespace: its pids mean nothing here
        return process_start(int(pid)) != start
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # the pid runs under another user
    return False


async def take_lease(runtime: RunLeases, run_id: str, owner: str) -> Any:
    """Acquire the run's lease; a lease of a dead owner on this host, or of a holding of this
    process that has ended, is taken over at once; any other live lease raises
    `RunConflict`."""
    try:
        return await runtime.acquire_lease(run_id, owner)
    except RunConflict as err:
        if err.owner is None or not (err.owner in _ended or owner_is_dead(err.owner)):
            raise
        _log.info("run %s: taking over the lease of %s, which holds it no more", run_id, err.owner)
        lease = await runtime.acquire_lease(run_id, owner, take_from=err.owner)
        _ended.discard(err.owner)
        return lease


@contextlib.asynccontextmanager
async def hold_lease(runtime: RunLeases | None, run_id: str) -> AsyncIterator[Any]:
    """Hold the run's lease while the body runs, renewing it, and fence the body's journal
    writes with its token; a journal without leases is used by one process, and needs none.

    When the lease is lost (another worker took the run over) the body is cancelled, and
    the block raises `LeaseLost`.
    """
    if runtime is None:
        yield None
        return
    owner = f"{_WORKER}:{uuid.uuid4().hex[:8]}"
    lease = await take_lease(runtime, run_id, owner)  # RunConflict: another worker has it
    body = asyncio.current_task()
    lost: list[BaseException] = []

    async def renew() -> None:
        while True:
            await asyncio.sleep(runtime.lease_seconds / 3)
            try:
                await runtime.renew_lease(run_id, owner)
            except Exception as err:
                # The lease is lost (or the journal is gone): stop rather than race another
                # worker that may now own the run.
                lost.append(err)
                if body is not None:
                    body.cancel()
                return

    fence = current_fence.set(lease if isinstance(lease, Lease) else None)
    renewing = asyncio.create_task(renew())
    try:
        yield lease
    except BaseException as err:
        if not lost:
            raise
        if body is not None:
            body.uncancel()  # the cancel was ours, not the caller's
        if not isinstance(err, asyncio.CancelledError | LeaseLost):
            raise
        if not isinstance(lost[0], RunConflict):
            raise lost[0] from err  # the journal failed (unreachable): say so, not "lost"
        token = getattr(lease, "token", 0)
        raise LeaseLost(run_id, token, f"lease lost while running: {lost[0]}") from lost[0]
    finally:
        current_fence.reset(fence)
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        try:
            await runtime.release_lease(run_id, owner)
        except Exception:
            _ended.add(owner)  # left to expire; this process may take it over at once
