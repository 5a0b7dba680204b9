"""`ToolRegistry`: a `ToolHost` over in-process Python functions."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, cast

from loomgraph.protocols import ToolCall, ToolHost, ToolResult, ToolSpec, implements
from loomgraph.protocols.threads import run_in_thread
from loomgraph.tools import results
from loomgraph.tools.context import MissingToolDependency, context_for, resolve
from loomgraph.tools.deadline import run_with_limit
from loomgraph.tools.strays import DEFAULT_MAX_ABANDONED, Strays, ThreadCall, check_max_abandoned
from loomgraph.tools.tool import Tool, check_timeout

_log = logging.getLogger(__name__)

ToolLike = Callable[..., Any]  # a plain function or a Tool


class ToolRegistry:
    """Named tools, their specs, and their execution with validation and timeouts.

    `timeout` is the default limit in seconds for each call (None for no limit); a tool's
    own `@tool(timeout=...)` overrides it. `deps` are the values of parameters marked
    `Injected` (by key or type); a tool needing one that is missing is refused when added.
    `call` turns every failure of a tool into an
    error result — also `SystemExit`, `KeyboardInterrupt` and any other `BaseException` —
    and only lets the cancellation of the calling task through. Each call runs in a task of
    its own (`run_with_limit`), so it ends at its limit even if the tool ignores being
    cancelled; such a tool is abandoned and runs on in the background. A tool with
    `max_abandoned` such calls still running is refused (`unavailable`) until one returns.
    """

    def __init__(
        self,
        tools: Iterable[ToolLike] | None = None,
        *,
        timeout: float | None = 60.0,
        deps: Mapping[Any, Any] | None = None,
        max_abandoned: int = DEFAULT_MAX_ABANDONED,
    ) -> None:
        self.timeout = check_timeout("ToolRegistry", timeout)
        self.max_abandoned = check_max_abandoned(max_abandoned)
        self._strays = Strays()
        self.deps: Mapping[Any, Any] = dict(deps or {})
        self._tools: dict[str, Tool[..., Any]] = {}
        self._specs: list[ToolSpec] | None = None
        for fn in tools or ():
            self.add(fn)

    @classmethod
    def as_tool_host(
        cls, obj: object, *, timeout: float | None = 60.0, deps: Mapping[Any, Any] | None = None
    ) -> ToolHost:
        """A ToolHost from None, a list or tuple of functions/tools, or an existing ToolHost."""
        if obj is None:
            return cls(timeout=timeout, deps=deps)
        if isinstance(obj, list | tuple):
            return cls(obj, timeout=timeout, deps=deps)
        if implements(obj, ToolHost) and not isinstance(obj, type):  # a class is no host
            return cast(ToolHost, obj)
        single = callable(obj) and not isinstance(obj, type)
        hint = " (wrap a single function in a list: [fn])" if single else ""
        raise TypeError(
            "expected None, a list of tool functions or an object implementing ToolHost "
            f"(specs, spec, call), got {type(obj).__name__}{hint}"
        )

    # ----------------------------------------------------------------- membership

    def add(self, fn: ToolLike) -> Tool[..., Any]:
        """Register a function or `@tool`; a duplicate name (ignoring case) raises ValueError
        naming where both tools are defined."""
        item = fn if isinstance(fn, Tool) else Tool(fn)
        # Ignoring case, as deny rules read tool names: `Transfer` beside `transfer` is a
        # lookalike a model or an approver may take for the other.
        folded = item.name.casefold()
        taken = next((t for name, t in self._tools.items() if name.casefold() == folded), None)
        if taken is not None:
            named = (
                ""
                if taken.name == item.name
                else f" as {taken.name!r} (names differing only in case are one name)"
            )
            raise ValueError(
                f"a tool named {item.name!r} is already registered{named} "
                f"({taken.defined_at}); the one added now is {item.defined_at}: give one of "
                "them another name (tool(fn, name=...))"
            )
        for need in item.injected:
            if not need.context:
                resolve(item.name, need, self.deps)  # raises MissingToolDependency
        self._tools[item.name] = item
        self._specs = None
        return item

    def provide(self, deps: Mapping[Any, Any]) -> None:
        """Use `deps` for `Injected` parameters; raises MissingToolDependency for a tool
        whose dependency is still missing."""
        merged = {**self.deps, **deps}
        for item in self._tools.values():
            for need in item.injected:
                if not need.context:
                    resolve(item.name, need, merged)
        self.deps = merged

    def remove(self, name: str) -> None:
        """Unregister a tool; an unknown name raises KeyError."""
        if name not in self._tools:
            raise KeyError(f"no tool named {name!r}; registered: {', '.join(self._tools)}")
        del self._tools[name]
        self._specs = None

    def names(self) -> list[str]:
        """The registered tool names, in registration order."""
        return list(self._tools)

    def get(self, name: str) -> Tool[..., Any] | None:
        """The registered tool of that name, or None."""
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self) -> Iterator[Tool[..., Any]]:
        return iter(list(self._tools.values()))

    # ----------------------------------------------------------------- ToolHost

    def specs(self) -> list[ToolSpec]:
        """The specs of every tool, in registration order; treat them as read-only."""
        if self._specs is None:
            self._specs = [t.spec for t in self._tools.values()]
        # Fresh outer dicts, so a caller adding keys (e.g. cache hints) changes no one else.
        return [s.copy() for s in self._specs]

    def spec(self, name: str) -> ToolSpec | None:
        """One tool's spec, or None when no such tool exists."""
        item = self._tools.get(name)
        return None if item is None else item.spec.copy()

    async def close(self) -> None:
        """Nothing to close: the tools are plain functions."""

    def received_args(self, call: ToolCall) -> dict[str, Any] | None:
        """The call's arguments as its tool will receive them (`Tool.received`), or None."""
        name, args = call.get("tool"), call.get("args")
        item = self._tools.get(name) if isinstance(name, str) else None
        if item is None or not isinstance(args, dict):
            return None
        return item.received(args)

    def argument_problem(self, call: ToolCall) -> str | None:
        """The `invalid_arguments` text `call` would answer for these arguments (checked as
        it checks them, nothing run), or None: they validate, or there is no such tool."""
        name = call.get("tool")
        item = self._tools.get(name) if isinstance(name, str) else None
        if item is None:
            return None
        args = results.call_args(call)
        if args is None:
            return results.not_an_object(item.name, call.get("args"))["content"]
        try:
            item.bind(args, "")
        except Exception as exc:  # as `call` reports it
            return results.invalid_arguments(item.name, exc)["content"]
        return None

    async def call(self, call: ToolCall, *, idempotency_key: str) -> ToolResult:
        """Validate and run one call; failures become error results, never exceptions."""
        if not isinstance(call, Mapping):  # (a caller's own, not a model's: those are checked)
            return results.not_a_call(call, self._tools)
        name = call.get("tool")
        item = self._tools.get(name) if isinstance(name, str) else None
        if item is None:
            return results.unknown_tool(name, self._tools)
        args = results.call_args(call)
        if args is None:
            return results.not_an_object(item.name, call.get("args"))
        try:
            injected = self._inject(item, call, idempotency_key) if item.injected else None
            pos, kwargs = item.bind(args, idempotency_key, injected)
        except MissingToolDependency as exc:
            return results.tool_exception(exc)
        except Exception as exc:  # a user validator may raise more than ValidationError
            return results.invalid_arguments(item.name, exc)

        strays = self._strays.count(item.name)
        if strays >= self.max_abandoned:
            return results.unavailable(item.name, strays)
        limit = item.timeout if item.timeout is not None else self.timeout
        work = _run(item, pos, kwargs, self._strays)
        outcome = await run_with_limit(work, limit, item.name, self._strays)
        if outcome is None:
            assert limit is not None  # only a limit ends a call without an outcome
            return results.timed_out(item.name, limit)
        finished, value = outcome
        if not finished:
            return _raised(item, value)
        try:
            return results.success(value)
        except BaseException as exc:  # a value that cannot be made text (a cycle, a deep nest)
            _log.debug("tool %r returned a value that cannot be made text", item.name, exc_info=exc)
            return results.not_serializable(exc)

    def stray_calls(self, name: str) -> int:
        """How many calls of tool `name` were abandoned at their limit and still run."""
        return self._strays.count(name)

    def _inject(self, item: Tool[..., Any], call: ToolCall, key: str) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for need in item.injected:
            if need.context:
                values[need.param] = context_for(str(call.get("id", "")), item.name, key)
            else:
                values[need.param] = resolve(item.name, need, self.deps)
        return values


async def _run(
    item: Tool[..., Any], pos: tuple[Any, ...], kwargs: dict[str, Any], strays: Strays
) -> Any:
    """Call the tool (a sync one in a worker thread), and await what it returns if that is
    awaitable: a sync wrapper around an async function returns a coroutine. An awaitable
    left after that is a forgotten `await`, refused (`_forgotten_await`)."""
    if item.is_async:
        value = item.fn(*pos, **kwargs)
    else:
        # A thread cannot be killed: on timeout the call is abandoned, not stopped, and the
        # thread runs on in the background until the function returns. It is a daemon thread
        # of loomgraph's own (`threads`), never one of the loop's default executor, so a hung
        # tool holds only its own thread: not other tools, DNS or the program's exit.
        thread = ThreadCall(strays, item.name)
        try:
            value = await run_in_thread(thread.run, item.fn, *pos, **kwargs)
        except asyncio.CancelledError:
            thread.abandon()
            _log.warning(
                "sync tool %r was cancelled (its time limit, or its run): its thread cannot be "
                "stopped and runs on in the background until the function returns",
                item.name,
            )
            raise
        if inspect.isawaitable(value):
            item.is_async = True  # call it on the event loop from now on
    if inspect.isawaitable(value):
        value = await value
    if inspect.isawaitable(value):
        raise _forgotten_await(item.name, value)
    return value


def _forgotten_await(tool: str, value: object) -> TypeError:
    """The error of a tool whose result was still awaitable once its own call was awaited:
    `return send(...)` where `return await send(...)` was meant. Refused rather than awaited:
    the code is wrong wherever it runs and only an error shows it, while a result of its text
    told the model nothing. A coroutine is closed: its body never runs, and Python adds no
    "never awaited" warning to the error."""
    what = getattr(value, "__qualname__", None) or type(value).__name__
    kind, ran = "awaitable", ""
    if inspect.iscoroutine(value):
        value.close()
        kind, ran = "coroutine", "; it did not run"
    return TypeError(
        f"tool {tool!r} returned an un-awaited {kind} ({what}) instead of its result: "
        f"a missing `await` in the tool (`return await ...`){ran}"
    )


def _raised(item: Tool[..., Any], exc: BaseException) -> ToolResult:
    _log.debug("tool %r raised", item.name, exc_info=exc)
    return results.tool_exception(exc)
