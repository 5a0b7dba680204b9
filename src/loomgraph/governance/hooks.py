"""`Hooks`: user callbacks around nodes, tools and events, registered with decorators.

```python
hooks = Hooks(timeout=5.0)

@hooks.before_tool
def no_rm(call):
    if call["tool"] == "shell" and "rm " in call["args"].get("cmd", ""):
        return "no deleting"            # a reason: the call is denied
```

The same object implements the `Hooks` protocol the interpreter calls: `hooks.before_tool(f)`
registers when `f` is callable and runs the registered callbacks otherwise (a ToolCall, a node
name or an Event is never callable). Callbacks may be sync or async; sync ones run in a worker
thread (unless `threads=False`), so a slow hook never blocks other runs.

A `before_tool` callback may deny (return a deny Decision, False or a reason string), never
approve: None, True, an allow or an ask Decision let the call through to the permission
decision already made. A callback that raises, outlives `timeout` or returns anything else
denies the call (for `before_tool`) and is reported — to `on_error` (bounded by the same
`timeout`) and in `hooks.errors` — never raised into the run.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar, overload

from loomgraph.protocols import Decision, ToolCall, ToolResult
from loomgraph.protocols.events import Event
from loomgraph.protocols.shapes import shape
from loomgraph.protocols.tasks import stops_the_task
from loomgraph.protocols.threads import run_in_thread

__all__ = ["HookError", "Hooks"]

log = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])
KINDS = ("before_node", "after_node", "before_tool", "after_tool", "on_event")


@dataclass(frozen=True, slots=True)
class HookError:
    """A hook that failed: where (`kind`), which callback (`hook`) and the error."""

    kind: str
    hook: str
    error: str
    exception: BaseException | None = None


ErrorCallback = Callable[[HookError], Awaitable[None] | None]


class _Failed(Exception):
    """A callback raised or timed out; carries the report."""

    def __init__(self, report: HookError) -> None:
        super().__init__(report.error)
        self.report = report


class _Junk(NamedTuple):
    """A before_tool result that is no verdict: `shown` (its repr, for the report and the
    log) and `shaped` (its type and size, for the decision, which the audit log records)."""

    shown: str
    shaped: str


_VERDICTS = "not a Decision of verdict 'deny', 'allow' or 'ask', a bool, a str or None"


class Hooks:
    """Callbacks for `before_node`, `after_node`, `before_tool`, `after_tool` and `on_event`.

    `timeout` (seconds, None for none) bounds each callback; `on_error` (sync or async) hears
    of every failure, and the latest `max_errors` are kept in `errors`.
    """

    def __init__(
        self,
        timeout: float | None = 5.0,
        *,
        on_error: ErrorCallback | None = None,
        threads: bool = True,
        max_errors: int = 1000,
    ) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be positive or None, not {timeout!r}")
        self.timeout = timeout
        self.on_error = on_error
        self.threads = threads
        self.errors: deque[HookError] = deque(maxlen=max_errors)
        self._callbacks: dict[str, list[Callable[..., Any]]] = {kind: [] for kind in KINDS}

    def register(self, kind: str, fn: _F) -> _F:
        """Add a callback of one kind; returns it unchanged (so it works as a decorator)."""
        if kind not in self._callbacks:
            raise ValueError(f"unknown hook kind {kind!r}; use one of {', '.join(KINDS)}")
        if not callable(fn):
            raise TypeError(f"a {kind} hook must be callable, not {type(fn).__name__}")
        self._callbacks[kind].append(fn)
        return fn

    def registered(self, kind: str) -> bool:
        """Whether a callback of `kind` is registered: a run skips a kind that has none (and
        builds nothing to give it), as it skips the no-op hooks."""
        return bool(self._callbacks.get(kind))

    def callbacks(self, kind: str) -> list[Callable[..., Any]]:
        """The callbacks of one kind, in the order they run."""
        return list(self._callbacks[kind])

    # ------------------------------------------------------------------ decorator or call

    @overload
    def before_node(self, node: _F) -> _F: ...
    @overload
    def before_node(self, node: str, state: Mapping[str, Any]) -> Coroutine[Any, Any, None]: ...
    def before_node(self, node: Any, state: Any = None) -> Any:
        """Register a callback `(node, state)`, or run them before a node."""
        if callable(node):
            return self.register("before_node", node)
        return self._notify("before_node", node, state)

    @overload
    def after_node(self, node: _F) -> _F: ...
    @overload
    def after_node(self, node: str, patch: Mapping[str, Any]) -> Coroutine[Any, Any, None]: ...
    def after_node(self, node: Any, patch: Any = None) -> Any:
        """Register a callback `(node, patch)`, or run them after a node."""
        if callable(node):
            return self.register("after_node", node)
        return self._notify("after_node", node, patch)

    @overload
    def before_tool(self, call: _F) -> _F: ...
    @overload
    def before_tool(self, call: ToolCall) -> Coroutine[Any, Any, Decision | None]: ...
    def before_tool(self, call: Any) -> Any:
        """Register a callback `(call)` that may deny, or run them before a tool call."""
        if callable(call):
            return self.register("before_tool", call)
        return self._before_tool(call)

    @overload
    def after_tool(self, call: _F) -> _F: ...
    @overload
    def after_tool(self, call: ToolCall, result: ToolResult) -> Coroutine[Any, Any, None]: ...
    def after_tool(self, call: Any, result: Any = None) -> Any:
        """Register a callback `(call, result)`, or run them after a tool call."""
        if callable(call):
            return self.register("after_tool", call)
        return self._notify("after_tool", call, result)

    @overload
    def on_event(self, event: _F) -> _F: ...
    @overload
    def on_event(self, event: Event) -> Coroutine[Any, Any, None]: ...
    def on_event(self, event: Any) -> Any:
        """Register a callback `(event)`, or run them for one event."""
        if callable(event):
            return self.register("on_event", event)
        return self._notify("on_event", event)

    # ------------------------------------------------------------------ running

    async def _notify(self, kind: str, *args: Any) -> None:
        for fn in list(self._callbacks[kind]):
            try:
                await self._invoke(kind, fn, args)
            except _Failed as failed:
                await self._report(failed.report)

    async def _before_tool(self, call: ToolCall) -> Decision | None:
        for fn in list(self._callbacks["before_tool"]):
            name = _name(fn)
            try:
                result = await self._invoke("before_tool", fn, (call,))
            except _Failed as failed:
                await self._report(failed.report)
                # Named by its error's type: the message (in `errors`, `on_error` and the
                # log) may quote the call's arguments, which the audit log keeps as a hash.
                error = failed.report.exception
                what = type(error).__name__ if error is not None else "an error"
                return Decision("deny", f"hook:{name}", f"hook {name} failed: {what}")
            denied = _denial(name, result)
            if isinstance(denied, _Junk):
                # Its value (the call, as a middleware would return it) is reported; the
                # decision, which the audit log records, names only its type and size.
                shown, shaped = (f"hook {name} returned {what}, {_VERDICTS}" for what in denied)
                await self._report(HookError("before_tool", name, shown))
                return Decision("deny", f"hook:{name}", shaped)
            if denied is not None:
                return denied
        return None

    async def _invoke(self, kind: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """Run one callback within the timeout; a failure becomes `_Failed`."""
        timeout = self.timeout
        try:
            # An object with an async __call__ is a coroutine function too.
            call = getattr(fn, "__call__", None)  # noqa: B004
            if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call):
                return await _within(fn(*args), timeout)
            if self.threads:
                # The thread cannot be stopped: after a timeout it finishes in the background,
                # in a daemon thread of its own (`run_in_thread`), never one of the loop's
                # default executor, which host-name resolution needs.
                result = await _within(run_in_thread(fn, *args), timeout)
            else:
                start = time.monotonic()
                result = fn(*args)
                if timeout is not None and time.monotonic() - start > timeout:
                    raise TimeoutError(f"took {time.monotonic() - start:.3f}s")
            if inspect.isawaitable(result):
                result = await _within(result, timeout)
            return result
        except asyncio.CancelledError as err:
            if stops_the_task(err):
                raise  # the run is cancelled; not the hook's failure
            # The hook raised it itself: a failure of the hook like any other, not a cancel
            # of the run (which the journal would then record as the caller's).
            raise _Failed(
                HookError(kind, _name(fn), "CancelledError raised by the hook", err)
            ) from None
        except TimeoutError as err:
            text = str(err) or f"exceeded its {timeout}s timeout"
            raise _Failed(HookError(kind, _name(fn), f"TimeoutError: {text}", err)) from None
        except Exception as err:
            raise _Failed(HookError(kind, _name(fn), f"{type(err).__name__}: {err}", err)) from None

    async def _report(self, report: HookError) -> None:
        self.errors.append(report)
        log.warning("hook %s (%s) failed: %s", report.hook, report.kind, report.error)
        if self.on_error is None:
            return
        try:
            # Run as a callback is (a sync one off the loop, within `timeout`): an alerting
            # path that hangs or blocks must not hang or stall the run it reports on.
            await self._invoke("on_error", self.on_error, (report,))
        except _Failed as failed:  # logged only: reporting it would report again
            log.warning(
                "hooks on_error callback failed: %s",
                failed.report.error,
                exc_info=failed.report.exception,
            )


async def _within(step: Awaitable[Any], timeout: float | None) -> Any:
    """`step`'s result within `timeout` seconds, else `TimeoutError` — also when the step
    swallowed the timeout's cancel and returned late (`except BaseException` for cleanup):
    its late answer is not taken. A cancel of the task itself is never swallowed."""
    task = asyncio.current_task()
    cancels = task.cancelling() if task is not None else 0
    async with asyncio.timeout(timeout) as bound:
        result = await step
    if bound.expired():
        if task is not None and task.cancelling() > cancels:
            raise asyncio.CancelledError()  # the task was cancelled meanwhile: not lost
        raise TimeoutError(f"exceeded its {timeout}s timeout and returned late")
    return result


def _denial(name: str, result: Any) -> Decision | _Junk | None:
    """What a before_tool result means: a deny Decision, None to let the call through, or
    `_Junk` for a result that is no verdict (which denies too, and is reported)."""
    if result is None or result is True:
        return None
    if isinstance(result, Decision):
        if result.verdict in ("allow", "ask"):
            return None  # hooks never approve (nor ask): the permission decision stands
        if result.verdict != "deny":  # "block", "DENY": `Decision` checks nothing
            return _Junk(repr(result), "a Decision of no known verdict")
        rule = f"hook:{name}:{result.rule}" if result.rule else f"hook:{name}"
        return Decision("deny", rule, result.reason or f"denied by hook {name}")
    if result is False:
        return Decision("deny", f"hook:{name}", f"denied by hook {name}")
    if isinstance(result, str):
        return Decision("deny", f"hook:{name}", result or f"denied by hook {name}")
    return _Junk(repr(result), shape(result))


def _name(fn: Callable[..., Any]) -> str:
    """`fn`'s qualified name without `outer.<locals>.`, e.g. `no_rm` or `Guard.check`."""
    name = str(getattr(fn, "__qualname__", None) or type(fn).__name__)
    return name.rsplit("<locals>.", 1)[-1]
