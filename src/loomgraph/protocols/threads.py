"""The threads sync tools, sync hooks and sync `function` nodes run in: daemon threads of
loomgraph's own, reused when idle (named `loomgraph-tool-N`, after their first use).

`asyncio.to_thread` runs a function in the event loop's default executor, a
`ThreadPoolExecutor` of min(32, cpus + 4) threads. A sync tool that hangs is abandoned at
its limit (`deadline.run_with_limit`) but keeps its thread, so a handful of them filled that
executor: every later sync tool call, and `loop.getaddrinfo` (host-name resolution for every
HTTP client), queued behind them for ever, and `asyncio.run` and the interpreter's exit
waited for them (an executor's threads are joined).

`run_in_thread` hands each call to an idle worker, or starts a new daemon thread when none
is idle: a hung tool holds only its own thread, nothing queues behind it, and the interpreter
does not wait for it at exit. A worker that finishes a call waits for the next one if fewer
than `MAX_IDLE` workers are waiting, and ends otherwise. There is no cap here on threads
running at once: tool calls waited for are bounded by the agent's own concurrency (a `tools`
node runs at most `concurrency` calls of a turn at once, a worker fleet `--concurrency` runs),
and abandoned ones by `ToolRegistry(max_abandoned=...)` (`loomgraph.tools.strays`).

The outcome comes back to the caller's loop with `call_soon_threadsafe`, and is dropped when
the caller has stopped waiting or its loop is closed: nothing is raised there later.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

P = ParamSpec("P")
T = TypeVar("T")

MAX_IDLE = 8
"""Idle workers kept waiting for the next call; any more end when their call does. Eight,
the `tools` node's default `concurrency`: the calls of one turn reuse threads too."""

Outcome = tuple[bool, Any]
"""What a call ends with: (True, its value) or (False, the exception it raised)."""


async def run_in_thread(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Call `fn` in a daemon worker thread, in a copy of the caller's context, as
    `asyncio.to_thread` does; a caller that stops waiting leaves the thread running."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[Outcome] = loop.create_future()
    _pool.submit(_Call(loop, waiter, contextvars.copy_context(), fn, args, kwargs))
    ok, value = await waiter
    if ok:
        return cast(T, value)
    try:
        raise value
    finally:
        del value  # the exception's traceback holds this frame


class _Call:
    """One call for a worker: what to run, in which context, and whose future to settle."""

    __slots__ = ("args", "context", "fn", "kwargs", "loop", "waiter")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        waiter: asyncio.Future[Outcome],
        context: contextvars.Context,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.loop, self.waiter, self.context = loop, waiter, context
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def run(self) -> Outcome:
        """Call the function; whatever it raises (SystemExit too) is its outcome."""
        try:
            return True, self.context.run(self.fn, *self.args, **self.kwargs)
        except BaseException as exc:  # the caller decides what a tool's failure means
            return False, exc

    def deliver(self, outcome: Outcome) -> None:
        """Hand the outcome to the caller's loop, unless that loop is closed."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: no one waits any more
            self.loop.call_soon_threadsafe(_settle, self.waiter, outcome)


def _settle(waiter: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not waiter.done():  # done: the caller was cancelled and stopped waiting
        waiter.set_result(outcome)


class _Pool:
    """The idle workers, counted, and the queue they take their next call from."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle = 0  # workers that will take a call from `calls`, minus calls queued there
        self.calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self.numbers = itertools.count(1)

    def submit(self, call: _Call) -> None:
        """Give the call to an idle worker, or to a new daemon thread when none is idle."""
        with self.lock:
            if self.idle:
                self.idle -= 1
                self.calls.put(call)
                return
            name = f"loomgraph-tool-{next(self.numbers)}"
        threading.Thread(target=self.work, args=(call,), name=name, daemon=True).start()

    def work(self, call: _Call | None) -> None:
        """A worker's life: run calls until one ends with `MAX_IDLE` workers idle already."""
        while call is not None:
            outcome = call.run()
            # Counted idle before the caller hears back, so its next call reuses this thread.
            with self.lock:
                stay = self.idle < MAX_IDLE
                if stay:
                    self.idle += 1
            call.deliver(outcome)
            del call, outcome  # an idle worker keeps nothing of its last call alive
            call = self.calls.get() if stay else None


_pool = _Pool()


def _forget_workers() -> None:
    """After a fork, the child has none of its parent's threads: start from none."""
    global _pool
    _pool = _Pool()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers)
