"""Leases: a run is advanced by one worker at a time when its journal is shared.

An owner is `host:pid:start:nonce`: the host name, the process id, the process's start time
(`ticks@boot.pidns`: field 22 of `/proc/<pid>/stat`, the boot id and the pid namespace; empty
where `/proc` is missing) and a nonce per holding. On the same host (same boot and pid
namespace) a lease whose process is gone (or ended and not yet reaped: a zombie), or whose
pid now belongs to a process started at another time, is taken over at once; any other lease
is left to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from loomgraph.errors import ServiceUnavailable
from loomgraph.protocols import RunLeases
from loomgraph.protocols.runtime import Lease, current_fence
from loomgraph.runtime.errors import JournalUnavailable, LeaseLost, RunConflict

_log = logging.getLogger(__name__)
_HOST = socket.gethostname()


def process_start(pid: int) -> str | None:
    """When a process started (`ticks@boot.pidns`), or None when it does not exist, is dead
    (a zombie: it ended, killed or not, and its parent has not reaped it yet) or this
    platform has no `/proc`."""
    fields = _stat(pid)
    if fields is None or fields[0] in _DEAD:
        return None
    return f"{fields[19]}@{_scope()}"  # fields[0] is field 3; starttime is field 22


# States of `/proc/<pid>/stat` of a process that ended: a zombie keeps its pid and start
# time until its parent reaps it (a busy supervisor, a shell, a test runner may take long),
# but runs no more, so it holds nothing.
_DEAD = frozenset({"Z", "X", "x"})


def _stat(pid: int) -> list[str] | None:
    """The fields of `/proc/<pid>/stat` from field 3 (the state) on, or None when there is no
    such process or no `/proc`."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces and ")"


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
    """True when `owner` is a process of this host (boot, pid namespace) that is gone (a
    zombie too), or whose pid now belongs to a process started at another time; False when
    unsure."""
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
    fields = _stat(int(pid))
    if fields is not None and fields[0] in _DEAD:
        return True  # ended, not yet reaped: `kill(pid, 0)` still finds it
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


# Why the lease the current task holds made `hold_lease` stop it (one list per holding, empty
# while it never did): read by the session, which journals a cancel only when it is the
# caller's. Tasks the run starts copy the context, so they see their run's holding.
_stopped: contextvars.ContextVar[list[BaseException] | None] = contextvars.ContextVar(
    "loomgraph_lease_stopped", default=None
)


def lease_stop() -> BaseException | None:
    """Why the lease this task holds (`hold_lease`) cancelled it: the renewal's `RunConflict`
    (`LeaseLost`: another worker took the run over) or `JournalUnavailable` (the journal could
    not be reached before the lease ran out), or another error of the renewal. None when no
    lease holder stopped this task: a cancel is then its caller's.

    A run stopped so is not journaled as anything (it may have lost the lease, and its
    journal may not be there to take it): it is left `running`, as a crash leaves it."""
    stops = _stopped.get()
    return stops[0] if stops else None


def _unreachable(run_id: str, ttl: float, last: BaseException | None) -> JournalUnavailable:
    """Why a run was stopped whose lease could not be renewed before it ran out."""
    if isinstance(last, JournalUnavailable):
        return last
    why = f"{type(last).__name__}: {last}" if last is not None else "no answer in time"
    return JournalUnavailable(
        f"of run {run_id}", f"its lease could not be renewed within its {ttl:g} s ({why})"
    )


@contextlib.asynccontextmanager
async def hold_lease(runtime: RunLeases | None, run_id: str) -> AsyncIterator[Any]:
    """Hold the run's lease while the body runs, renewing it, and fence the body's journal
    writes with its token; a journal without leases is used by one process, and needs none.

    A renewal the journal did not answer (`ServiceUnavailable`: a network stall, a lock, a
    slow server) is tried again while the lease is surely live: until `lease_seconds` after
    the last renewal that went through was sent, less a tenth. When none goes through by
    then, or the lease was lost (another worker took the run over), the body is cancelled and
    the block raises `JournalUnavailable` or `LeaseLost`; `lease_stop()` tells the body that
    the cancel was the lease's, not its caller's, so the run is not journaled as cancelled.
    """
    if runtime is None:
        yield None
        return
    owner = f"{_WORKER}:{uuid.uuid4().hex[:8]}"
    taken = time.monotonic()  # sent no later than this: the lease lives at least `ttl` from it
    lease = await take_lease(runtime, run_id, owner)  # RunConflict: another worker has it
    body = asyncio.current_task()
    lost: list[BaseException] = []
    ttl = float(runtime.lease_seconds)

    def stop(err: BaseException) -> None:
        lost.append(err)
        if body is not None:
            body.cancel()

    async def renew() -> None:
        live_until = taken + ttl  # by this process's clock: a lower bound of the lease's end
        margin = ttl / 10
        pause = ttl / 3
        last: BaseException | None = None
        while True:
            await asyncio.sleep(pause)
            sent = time.monotonic()
            # Not waited on past the lease's end: the run must stop by then. A process that
            # was itself stopped past it (SIGSTOP, a long pause) still asks, for a moment:
            # the journal says whether the lease is still its own (nobody took it) or lost.
            # (`asyncio.timeout`, not `wait_for`, which can swallow the cancel ending this.)
            try:
                async with asyncio.timeout(max(live_until - margin - sent, margin)):
                    await runtime.renew_lease(run_id, owner)
            except RunConflict as err:
                stop(err)  # lost (taken over): stop rather than race the new owner
                return
            except (ServiceUnavailable, TimeoutError) as err:
                # The journal did not answer: not the run's failure, and the lease may still
                # be ours. Try again while it surely is; stop (journaling nothing) after.
                last = err if isinstance(err, ServiceUnavailable) else last
                left = live_until - margin - time.monotonic()
                why = err if isinstance(err, ServiceUnavailable) else "no answer in time"
                if left <= 0:
                    _log.warning(
                        "lease renewal of run %s failed (%s) and the lease runs out: the run "
                        "stops, left running in the journal for a recovery",
                        run_id,
                        why,
                    )
                    stop(_unreachable(run_id, ttl, last))
                    return
                _log.warning(
                    "lease renewal of run %s failed (%s); trying again for another %.1f s",
                    run_id,
                    why,
                    left,
                )
                pause = min(ttl / 10, left / 2)
            except Exception as err:
                stop(err)  # the journal failed otherwise: stop, and say why
                return
            else:
                live_until, pause = sent + ttl, ttl / 3

    fence = current_fence.set(lease if isinstance(lease, Lease) else None)
    stopped = _stopped.set(lost)
    renewing = asyncio.create_task(renew())
    try:
        yield lease
    except BaseException as err:
        if not lost:
            raise
        if body is not None:
            body.uncancel()  # the cancel was ours, not the caller's
        if not isinstance(err, Exception | asyncio.CancelledError):
            raise  # KeyboardInterrupt, SystemExit: the process is going away
        # Whatever else the body raised came on its way out of the lease's cancel (a ledger
        # on the same silent server refusing the cut-off call's charge, say): the lease is
        # why the run stopped, and the body's error stays chained to it.
        if not isinstance(lost[0], RunConflict):
            raise lost[0] from err  # the journal failed (unreachable): say so, not "lost"
        token = getattr(lease, "token", 0)
        raise LeaseLost(run_id, token, f"lease lost while running: {lost[0]}") from lost[0]
    finally:
        _stopped.reset(stopped)
        current_fence.reset(fence)
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        try:
            await runtime.release_lease(run_id, owner)
        except Exception:
            _ended.add(owner)  # left to expire; this process may take it over at once
