"""Local tools past their time limit, and sync callables that return awaitables.

Whatever a tool does with its cancellation (honours it, swallows it and returns, swallows it
and runs on), the caller gets the `timeout` result at the limit and the tool is abandoned; an
awaitable returned by a sync callable (a `functools.wraps` decorator around an async function,
a lambda) is awaited under the same limit instead of being reported as the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator
from contextvars import ContextVar
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loomgraph import Agent
from loomgraph.models import ScriptedModel
from loomgraph.tools import ToolRegistry, tool
from loomgraph.tools.deadline import run_with_limit

T = TypeVar("T")

LIMIT = 0.05  # the tools' time limit, in seconds
BOUND = 10.0  # a bound on every wait for an event: reached only when the code is broken
LOGGER = "loomgraph.tools.registry"


async def bounded(work: Awaitable[T], release: asyncio.Event | None = None) -> T:
    """`work`'s outcome, failing the test (after releasing a stuck tool) when it takes longer
    than BOUND: a call that hangs is the bug, and must not hang the test run too."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=BOUND)
    if not done:
        if release is not None:
            release.set()
        await asyncio.wait({task}, timeout=BOUND)
        pytest.fail("the call did not come back by itself")
    return task.result()


async def call(
    registry: ToolRegistry, name: str, args: dict[str, Any] | None = None
) -> dict[str, Any]:
    result = await registry.call(
        {"id": "c1", "tool": name, "args": args or {}}, idempotency_key="k"
    )
    return dict(result)


def timed_out(name: str) -> dict[str, Any]:
    return {
        "content": f"Tool {name!r} timed out after {LIMIT:g} seconds.",
        "is_error": True,
        "error_type": "timeout",
    }


def warnings_about(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and r.levelno == logging.WARNING and repr(name) in r.getMessage()
    ]


# ------------------------------------------------------------------ cancellation refused


async def test_a_tool_that_swallows_its_cancellation_times_out_and_runs_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release, refused, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    @tool(timeout=LIMIT)
    async def stubborn() -> str:
        """Ignore every cancellation until released."""
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                refused.set()
        finished.set()
        return "stubborn done"

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = await bounded(call(ToolRegistry([stubborn]), "stubborn"), release)
    assert result == timed_out("stubborn")
    # Cancelled, refused, and left running: said so in a warning naming the tool.
    assert refused.is_set() and not finished.is_set()
    assert warnings_about(caplog, "stubborn")
    release.set()
    await asyncio.wait_for(finished.wait(), BOUND)


async def test_a_value_returned_after_swallowing_the_cancellation_is_still_a_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @tool(timeout=LIMIT)
    async def sneaky() -> str:
        """Turn the cancellation into a result."""
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "made it after all"
        return "never"

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = await bounded(call(ToolRegistry([sneaky]), "sneaky"))
    assert result == timed_out("sneaky")
    assert warnings_about(caplog, "sneaky") == []  # it stopped when cancelled


async def test_an_async_tool_that_blocks_the_loop_past_its_limit_is_a_timeout() -> None:
    # It cannot be cancelled while it blocks, and its value came back when it ended: the
    # limit held for every other kind of tool but this one.
    @tool(timeout=LIMIT)
    async def hog() -> str:
        """Block the event loop (a sync call inside an async def)."""
        time.sleep(LIMIT * 3)
        return "value after hogging"

    result = await bounded(call(ToolRegistry([hog]), "hog"))
    assert result == timed_out("hog")


async def test_an_agent_run_gets_the_timeout_of_a_stubborn_tool() -> None:
    """The finding through the whole Agent: the run goes on with a `timeout` tool message."""
    release, finished = asyncio.Event(), asyncio.Event()

    @tool(timeout=LIMIT)
    async def stubborn() -> str:
        """Ignore cancellation until released."""
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()
        finished.set()
        return "stubborn done"

    script: list[Any] = [{"tool_calls": [{"tool": "stubborn", "args": {}}]}, "ok"]
    agent = Agent("x", model=ScriptedModel(script), tools=[stubborn])
    result = await bounded(agent.run("go"), release)
    assert result.status == "completed" and not finished.is_set()
    history = await agent.history(result.run_id)
    tools = [m for m in history[-1].state["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tools] == [timed_out("stubborn")["content"]]
    release.set()
    await asyncio.wait_for(finished.wait(), BOUND)
    await agent.aclose()


async def test_cancelling_the_caller_is_not_held_up_by_a_stubborn_tool() -> None:
    release, entered, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def stubborn() -> str:
        """Ignore cancellation until released, with no time limit."""
        entered.set()
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()
        finished.set()
        return "late"

    task = asyncio.create_task(call(ToolRegistry([stubborn], timeout=None), "stubborn"))
    await asyncio.wait_for(entered.wait(), BOUND)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=BOUND)
    release.set()
    assert done, "the caller's cancellation waited for the tool"
    assert task.cancelled() and not finished.is_set()
    await asyncio.wait_for(finished.wait(), BOUND)


# ------------------------------------------------------------------ cancellation honoured


async def test_a_tool_that_honours_its_cancellation_has_cleaned_up_when_the_result_comes() -> None:
    cleaned: list[str] = []

    @tool(timeout=LIMIT)
    async def polite() -> str:
        """Wait, and clean up when cancelled."""
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits
            cleaned.append("closed")
        return "never"

    assert await bounded(call(ToolRegistry([polite]), "polite")) == timed_out("polite")
    assert cleaned == ["closed"]


async def test_cancelling_the_caller_cancels_a_polite_tool() -> None:
    entered, seen = asyncio.Event(), asyncio.Event()

    async def polite() -> str:
        """Wait until cancelled."""
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.set()
            raise
        return "never"

    task = asyncio.create_task(call(ToolRegistry([polite]), "polite"))
    await asyncio.wait_for(entered.wait(), BOUND)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, BOUND)
    assert seen.is_set()


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (SystemExit(5), "SystemExit: 5"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
        (asyncio.CancelledError("its own"), "CancelledError: its own"),
        (ValueError("late"), "ValueError: late"),
    ],
)
async def test_a_tool_failing_after_it_suspended_is_an_error_result(
    exc: BaseException, message: str
) -> None:
    """Once a tool waits for something it finishes in a task of its own: a BaseException it
    raises there is its failure too, and never reaches the event loop."""

    async def late() -> str:
        """Wait a little, then fail."""
        await asyncio.sleep(0)
        raise exc

    result = await bounded(call(ToolRegistry([late]), "late"))
    assert result == {"content": message, "is_error": True, "error_type": "tool_exception"}


async def test_a_tool_finishing_after_it_suspended_returns_its_value() -> None:
    async def slow(x: int) -> int:
        """Wait a little, then answer."""
        await asyncio.sleep(0)
        return 2 * x

    assert (await bounded(call(ToolRegistry([slow]), "slow", {"x": 21})))["content"] == "42"


BEHAVIOURS = ["honour", "return", "raise", "refuse_twice", "refuse_until_released"]


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(BEHAVIOURS), st.booleans(), st.integers(0, 3))
def test_past_its_limit_a_call_is_a_timeout_whatever_the_tool_does(
    behaviour: str, host_limit: bool, suspensions: int
) -> None:
    """Property: a tool still running at its limit gives the `timeout` result, never its value
    or its exception, however it reacts to being cancelled (and however long it ran first)."""

    async def body() -> None:
        release = asyncio.Event()

        async def tool_fn() -> str:
            """A tool that reacts to cancellation as drawn."""
            for _ in range(suspensions):
                await asyncio.sleep(0)
            refusals = 0
            while True:
                try:
                    await release.wait()
                    return "released"
                except asyncio.CancelledError:
                    refusals += 1
                    if behaviour == "honour":
                        raise
                    if behaviour == "return":
                        return "value after cancellation"
                    if behaviour == "raise":
                        raise ValueError("failed while cancelled") from None
                    if behaviour == "refuse_twice" and refusals > 2:
                        raise

        wrapped = tool(tool_fn, name="t", timeout=None if host_limit else LIMIT)
        registry = ToolRegistry([wrapped], timeout=LIMIT if host_limit else 60.0)
        try:
            result = await bounded(call(registry, "t"), release)
            assert result == timed_out("t")
        finally:
            release.set()

    asyncio.run(body())


# ------------------------------------------------------------------ sync callables, awaitables


def logged(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A careless decorator: a sync wrapper around whatever it is given."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


async def test_a_sync_wrapper_around_an_async_function_runs_it() -> None:
    sent: list[tuple[str, int]] = []

    @tool(destructive=True)
    @logged
    async def send_payment(to: str, cents: int) -> str:
        """Send a payment."""
        sent.append((to, cents))
        return "paid"

    registry = ToolRegistry([send_payment])
    result = await bounded(call(registry, "send_payment", {"to": "bob", "cents": 5}))
    assert result == {"content": "paid", "is_error": False}
    assert sent == [("bob", 5)]


async def test_a_lambda_returning_a_coroutine_is_awaited_and_then_treated_as_async() -> None:
    threads: list[int] = []

    async def search(q: str) -> str:
        threads.append(threading.get_ident())
        return f"results for {q}"

    def calling(q: str) -> Coroutine[Any, Any, str]:
        threads.append(threading.get_ident())
        return search(q)

    found = tool(lambda q: calling(q), name="search")
    registry = ToolRegistry([found])
    assert (await bounded(call(registry, "search", {"q": "x"})))["content"] == "results for x"
    assert found.is_async  # learnt from the first call
    threads.clear()
    assert (await bounded(call(registry, "search", {"q": "y"})))["content"] == "results for y"
    # Treated as async now: called on the event loop, no worker thread.
    assert threads == [threading.get_ident()] * 2


async def test_any_awaitable_a_sync_callable_returns_is_awaited() -> None:
    class Answer:
        def __await__(self) -> Generator[Any, None, str]:
            yield from asyncio.sleep(0).__await__()
            return "awaited"

    registry = ToolRegistry([tool(lambda: Answer(), name="answer")])
    assert (await bounded(call(registry, "answer")))["content"] == "awaited"


async def test_the_awaitable_of_a_sync_callable_runs_under_the_same_limit() -> None:
    release = asyncio.Event()

    async def hang() -> str:
        await release.wait()
        return "late"

    registry = ToolRegistry([tool(lambda: hang(), name="hang", timeout=LIMIT)])
    try:
        assert await bounded(call(registry, "hang"), release) == timed_out("hang")
    finally:
        release.set()


async def test_the_awaitable_of_a_sync_callable_may_fail_like_any_tool() -> None:
    async def broken() -> str:
        await asyncio.sleep(0)
        sys.exit(7)

    registry = ToolRegistry([tool(logged(broken), name="broken")])
    result = await bounded(call(registry, "broken"))
    assert result == {"content": "SystemExit: 7", "is_error": True, "error_type": "tool_exception"}


# ---------------------------------------------------------------------------- what a call keeps

held: ContextVar[object] = ContextVar("held")


class _Run:
    """Stands for what a run's context variables hold (its scope, its tool context)."""


async def test_a_finished_call_keeps_nothing_of_the_callers_context_alive() -> None:
    # asyncio.timeout's cancelled timer keeps a copy of the context until the loop prunes
    # it (or 60 s pass): with one, `run` would still be alive here.
    run = _Run()
    alive = weakref.ref(run)
    token = held.set(run)

    async def waits_once() -> str:
        await asyncio.sleep(0)
        return "done"

    assert await run_with_limit(waits_once(), 60, "waits_once") == (True, "done")
    held.reset(token)
    del run
    gc.collect()
    assert alive() is None
