"""The runs this server process drives: each a task draining the run's event stream, and a
wake-up for whoever follows that run's journal (so watchers need not wait for a poll).

On shutdown (`close`, as soon as the server is told to stop) every run driven here is
cancelled, and whoever still follows a run's journal is told the server is closing
(`Closing`, from the watcher), as is whoever waits for a run another process drives (a fleet
run: `unless_closing`), so no open request keeps the server from exiting."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from loomgraph.errors import LoomgraphError
from loomgraph.protocols.events import NODE_COMPLETED, RUN_COMPLETED, Event
from loomgraph.protocols.tasks import CancelReason, within

__all__ = ["SHUTDOWN_REASON", "Closing", "RunHub"]

log = logging.getLogger("loomgraph.serve")

# The journaled reason of the runs a server stops as it shuts down: nobody asked for it.
SHUTDOWN_REASON = "cancelled by the server's shutdown"

# Events after which the journal holds something new for watchers.
_JOURNALED = frozenset({NODE_COMPLETED, RUN_COMPLETED})

T = TypeVar("T")


class Closing(LoomgraphError):
    """The server is shutting down: a watcher stops following (the run goes on, or was
    cancelled, in the journal)."""


class RunHub:
    """Drives runs in the background and wakes their watchers when the journal moved on."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        # Every task driving a run, a fork's too before its run id is known.
        self._driving: set[asyncio.Task[Any]] = set()
        self._version: dict[str, int] = {}
        self._wakers: dict[str, asyncio.Event] = {}
        self.closing = False
        # Set with `closing`: ends every `unless_closing` wait at once.
        self._closed = asyncio.Event()

    # ------------------------------------------------------------------ wake-ups

    def version(self, run_id: str) -> int:
        """How many times the run's journal moved on in this process."""
        return self._version.get(run_id, 0)

    def notify(self, run_id: str) -> None:
        """The run's journal moved on: wake its watchers."""
        self._version[run_id] = self._version.get(run_id, 0) + 1
        waker = self._wakers.pop(run_id, None)
        if waker is not None:
            waker.set()

    async def wait_past(self, run_id: str, seen: int, timeout: float) -> None:
        """Return once the run moved on past version `seen`, or after `timeout` seconds, or
        at once when the hub is closing."""
        if self.version(run_id) > seen or self.closing:
            return
        waker = self._wakers.setdefault(run_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):  # (`within`: a cancel with the wake is kept)
            await within(waker.wait(), timeout)

    def watcher(self, run_id: str) -> Any:
        """A `changed(run_id, timeout)` for one watcher of `run_id` (see `follow_events`):
        it raises `Closing` once the hub closes and the run has nothing new to read (what a
        cancel on shutdown journaled is read first)."""
        seen = self.version(run_id)

        async def changed(rid: str, timeout: float) -> None:
            nonlocal seen
            await self.wait_past(rid, seen, timeout)
            if self.version(rid) == seen and self.closing:
                raise Closing(f"the server is shutting down; run {rid} is not followed further")
            seen = self.version(rid)

        return changed

    async def unless_closing(self, waiting: Awaitable[T]) -> T:
        """What `waiting` gives, unless the hub closes first: then `waiting` is cancelled and
        `Closing` raised. For a request waiting on something no run driven here ends (a fleet
        run's result): uvicorn runs the app's shutdown only once every connection closed, so
        such a request must be answered as soon as the server is told to stop."""
        task = asyncio.ensure_future(waiting)
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({task, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not task.done():
                task.cancel()
        if task.done() and not task.cancelled():
            return task.result()  # finished first (or together with the close): its answer
        await asyncio.wait({task})  # the cancelled wait ends before the request is answered
        raise Closing("the server is shutting down; it stopped waiting")

    # ------------------------------------------------------------------ runs

    def driving(self, run_id: str) -> bool:
        """True while this process drives the run."""
        task = self._tasks.get(run_id)
        return task is not None and not task.done()

    async def start(
        self, run_id: str, events: AsyncIterator[Event], *, past: frozenset[str] = frozenset()
    ) -> Event | None:
        """Drive a run from its event stream in the background; its first event not of a
        kind in `past` (None when the run ended, or was cancelled, first). An error raised
        before that (a refused resume) is raised here, and nothing more runs."""
        first: asyncio.Future[Event | None] = asyncio.get_running_loop().create_future()
        # Driven, and so cancellable, from the start: a resume takes the run's lease before
        # its first event, and a cancel arriving meanwhile must find it here.
        self._tasks[run_id] = self._spawn(self._drive(run_id, events, past, first))
        # Shielded: a caller that goes away does not stop a run it started.
        return await asyncio.shield(first)

    async def start_new(self, events: AsyncIterator[Event]) -> str:
        """Drive a new run whose id its first event tells (a fork's): that id, once the run
        is journaled (its `run_started`). An error raised before (a refused fork) is raised
        here; a run that ended before it said its id is a RuntimeError."""
        first: asyncio.Future[Event | None] = asyncio.get_running_loop().create_future()
        self._spawn(self._drive(None, events, frozenset(), first))
        event = await asyncio.shield(first)
        if event is None:
            raise RuntimeError("the run ended before it started")
        return event.run_id

    def _spawn(self, driving: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(driving)
        self._driving.add(task)
        task.add_done_callback(self._driving.discard)
        return task

    async def _drive(
        self,
        run_id: str | None,
        events: AsyncIterator[Event],
        past: frozenset[str],
        first: asyncio.Future[Event | None],
    ) -> None:
        this = asyncio.current_task()
        assert this is not None
        try:
            async for event in events:
                if run_id is None:  # a new run: driven under its id from its first event
                    run_id = event.run_id
                    self._tasks[run_id] = this
                if not first.done() and event.kind not in past:
                    first.set_result(event)
                if event.kind in _JOURNALED:
                    self.notify(run_id)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            if not first.done():  # refused before it started: the caller's error
                first.set_exception(err)
                return
            # The journal has the run's status; this is for operators.
            log.warning("run %s ended with %s: %s", run_id, type(err).__name__, err)
        finally:
            if not first.done():
                first.set_result(None)
            if run_id is not None:
                if self._tasks.get(run_id) is this:
                    del self._tasks[run_id]
                self.notify(run_id)

    async def wait(self, run_id: str) -> None:
        """Until the run this process drives ends (at once when it drives none)."""
        task = self._tasks.get(run_id)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    async def cancel(self, run_id: str, reason: str) -> bool:
        """Cancel a run this process drives (journaled as cancelled, for `reason`); False if
        it drives none."""
        task = self._tasks.get(run_id)
        if task is None or task.done():
            return False
        task.cancel(CancelReason(reason))
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return True

    async def close(self) -> None:
        """Shut down: cancel every run still driven, all at once (each is journaled as
        cancelled), then tell every watcher and every `unless_closing` wait (`Closing`): after the
        cancels, so that a watcher of a run driven here reads how it ended first. Idempotent."""
        driving = [task for task in self._driving if not task.done()]
        for task in driving:
            task.cancel(CancelReason(SHUTDOWN_REASON))
        await asyncio.gather(*driving, return_exceptions=True)
        self.closing = True
        self._closed.set()
        for waker in self._wakers.values():
            waker.set()
        self._wakers.clear()
