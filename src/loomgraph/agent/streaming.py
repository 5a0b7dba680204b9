"""Runs as streams of events: one producer task, a bounded queue, clean cancellation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from loomgraph.agent.result import RunResult
from loomgraph.engine.scope import EventSink
from loomgraph.protocols import Event
from loomgraph.protocols.events import RUN_STARTED

_STREAM_BUFFER = 32  # events a slow consumer may fall behind before the run waits for it
_DONE = object()


async def event_stream(
    run: Callable[[EventSink], Awaitable[RunResult]],
    on_event: EventSink,
    error: Callable[[], BaseException | None] = lambda: None,
) -> AsyncIterator[Event]:
    """The events of `run(sink)` as they happen (each also given to `on_event` first);
    leaving the loop early cancels the run cleanly. `error()` is raised after the last event
    when the run ended with an error its caller must see (an answer that did not fit)."""
    queue: asyncio.Queue[Any] = asyncio.Queue(_STREAM_BUFFER)

    async def sink(event: Event) -> None:
        await on_event(event)
        await queue.put(event)
        if event.kind == RUN_STARTED:
            # One pass of the loop: the consumer hears that the run started (and its id)
            # before the run does anything, such as a model call a Ctrl-C may cut short.
            await asyncio.sleep(0)

    left = False  # the consumer left the loop: nothing reads the queue again

    async def produce() -> RunResult:
        try:
            return await run(sink)
        finally:
            # Not once the consumer has left: the run may end (journaled cancelled) with the
            # buffer full, and a put nobody takes would keep the consumer's close waiting.
            if not left:
                await queue.put(_DONE)  # interrupted by cancel() when the consumer leaves

    task = asyncio.create_task(produce())
    message: Any = None
    try:
        while (item := await queue.get()) is not _DONE:
            yield item
        await task  # surfaces an infrastructure error, if the run raised one
        failure = error()
        if failure is not None:
            raise failure
    except asyncio.CancelledError as err:
        # The consumer's cancellation goes on to the run with its message: the run journals
        # who cancelled it (`CancelReason`), not that "the caller" did.
        message = err.args[0] if err.args else None
        raise
    finally:
        left = True
        if not task.done():
            task.cancel(message)
            with contextlib.suppress(asyncio.CancelledError):
                await task
