"""Sync tools run in loomgraph's own daemon threads, never in the event loop's default
executor: a hung sync tool is abandoned at its limit and holds only its own thread, so other
tools, host-name resolution (`loop.getaddrinfo`) and the end of the program go on."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from loomgraph.protocols import threads
from loomgraph.tools import ToolRegistry, tool

# The size of the loop's default executor (ThreadPoolExecutor's default max_workers): as
# many hung calls as that filled it before, when sync tools ran with `asyncio.to_thread`.
_cpus = getattr(os, "process_cpu_count", os.cpu_count)() or 1
EXECUTOR_SIZE = min(32, _cpus + 4)

HANG_LIMIT = 1.0  # the hung calls' limit, in seconds: long enough for every thread to start
WAIT = 10.0  # a generous bound on anything that should answer at once


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at teardown (and by each test before its loop closes): frees the hung threads."""
    event = threading.Event()
    yield event
    event.set()


async def call(host: ToolRegistry, name: str) -> dict[str, Any]:
    result = await host.call({"id": "c", "tool": name, "args": {}}, idempotency_key="k")
    return dict(result)


def hanging_host(release: threading.Event, started: list[int]) -> ToolRegistry:
    """A host whose `hang` tool blocks until `release` is set, noting its thread."""

    @tool(timeout=HANG_LIMIT)
    def hang() -> str:
        """Block until the test ends."""
        started.append(threading.get_ident())
        release.wait(600)
        return "released"

    return ToolRegistry([hang])


async def hang_executor_size_calls(release: threading.Event) -> list[int]:
    """As many hung sync tool calls as the default executor has threads, all timed out."""
    started: list[int] = []
    host = hanging_host(release, started)
    results = await asyncio.gather(*(call(host, "hang") for _ in range(EXECUTOR_SIZE)))
    assert [r.get("error_type") for r in results] == ["timeout"] * EXECUTOR_SIZE
    assert len(set(started)) == EXECUTOR_SIZE  # each hung call holds a thread of its own
    return started


# ----------------------------------------------------------------- the finding, reproduced


async def test_hung_sync_tools_leave_later_sync_tools_running(release: threading.Event) -> None:
    @tool(timeout=WAIT)
    def quick() -> str:
        """Answer at once."""
        return "ran"

    try:
        await hang_executor_size_calls(release)
        # Another host, another tool: each must still run, not queue behind the hung ones.
        for _ in range(3):
            assert await call(ToolRegistry([quick]), "quick") == {
                "content": "ran",
                "is_error": False,
            }
    finally:
        release.set()


async def test_hung_sync_tools_leave_host_name_resolution_working(
    release: threading.Event,
) -> None:
    loop = asyncio.get_running_loop()
    try:
        await hang_executor_size_calls(release)
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo("localhost", 80), WAIT)
        except TimeoutError:
            pytest.fail(
                f"loop.getaddrinfo did not answer within {WAIT:g} s: the loop's default "
                "executor is held by abandoned sync tools"
            )
        assert infos
    finally:
        release.set()


HUNG_AGENT = textwrap.dedent(
    """
    import asyncio
    import threading

    from loomgraph import Agent, tool
    from loomgraph.models import ScriptedModel

    never = threading.Event()


    @tool(timeout=0.2)
    def hang() -> str:
        \"\"\"Block forever.\"\"\"
        never.wait()
        return "never"


    async def main() -> None:
        script = [{"text": "", "tool_calls": [{"tool": "hang", "args": {}}]}, "done"]
        agent = Agent("", model=ScriptedModel(script), tools=[hang])
        result = await agent.run("go")
        history = await agent.history(result.run_id)
        tools = [m for m in history[-1].state["messages"] if m["role"] == "tool"]
        print(result.status, result.output, tools[0]["content"], flush=True)


    asyncio.run(main())
    print("asyncio.run returned", flush=True)
    """
)


def run_program(source: str, bound: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run `source` in a fresh interpreter; fail clearly (after killing it) if it hangs."""
    try:
        return subprocess.run(
            [sys.executable, "-c", source], capture_output=True, text=True, timeout=bound
        )
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed the child
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout
        pytest.fail(
            f"the program did not exit within {bound:g} s and was killed; its output: {out!r}"
        )


def test_a_program_whose_agent_abandoned_a_hung_sync_tool_exits() -> None:
    done = run_program(HUNG_AGENT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "completed done Tool 'hang' timed out after 0.2 seconds.",
        "asyncio.run returned",
    ]


# ----------------------------------------------------------------- the worker threads


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("loomgraph-tool-")]


async def test_a_sync_tool_sees_the_callers_context_variables_and_leaks_none_back() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    @tool
    def read_and_set() -> str:
        """Read the caller's variable, then set it."""
        seen = var.get()
        var.set("set in the tool")
        return seen

    var.set("the caller's")
    result = await call(ToolRegistry([read_and_set]), "read_and_set")
    assert result["content"] == "the caller's"
    assert var.get() == "the caller's"  # the tool ran in a copy of the context


async def test_an_idle_worker_is_reused_and_is_a_daemon_thread_of_loomgraphs() -> None:
    seen: list[threading.Thread] = []

    @tool
    def where() -> str:
        """Note the thread."""
        seen.append(threading.current_thread())
        return "ok"

    host = ToolRegistry([where])
    before = set(workers())  # idle ones left by other tests, maybe
    for _ in range(5):
        await call(host, "where")
    # A worker counts itself idle before its caller hears back: the next call reuses it
    # (or one that was idle already), so one new thread at most for five calls in a row.
    assert len(set(seen) - before) <= 1
    assert all(t.daemon and t.name.startswith("loomgraph-tool-") for t in seen)
    assert threading.current_thread() not in seen


async def test_at_most_max_idle_workers_are_kept() -> None:
    count = 3 * threads.MAX_IDLE
    gate = threading.Barrier(count, timeout=WAIT)

    def meet() -> int:
        gate.wait()  # all of them at once, so each needs a thread of its own
        return threading.get_ident()

    idents = await asyncio.gather(*(threads.run_in_thread(meet) for _ in range(count)))
    assert len(set(idents)) == count
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while len(workers()) > threads.MAX_IDLE and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert len(workers()) <= threads.MAX_IDLE


class Late:
    """A value a worker returns after its caller stopped waiting; says when it is freed."""

    def __init__(self) -> None:
        self.freed = threading.Event()
        weakref.finalize(self, self.freed.set)


def test_a_call_ending_after_its_caller_and_loop_are_gone_raises_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    raised: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", raised.append)
    release, started = threading.Event(), threading.Event()
    freed: list[threading.Event] = []

    def slow() -> Late:
        started.set()
        release.wait(WAIT)
        late = Late()
        freed.append(late.freed)
        return late

    async def give_up() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(threads.run_in_thread(slow), 0.05)

    try:
        # The caller is cancelled, then its loop closes, while the tool still runs.
        asyncio.run(give_up())
        assert started.wait(WAIT)
    finally:
        release.set()
    deadline = time.monotonic() + WAIT
    while not freed and time.monotonic() < deadline:
        time.sleep(0.01)
    # The worker dropped the value after failing to hand it over: nothing raised, no log.
    assert freed and freed[0].wait(WAIT)
    assert raised == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []

    async def again() -> str:
        return await threads.run_in_thread(lambda: "still working")

    assert asyncio.run(again()) == "still working"


async def test_a_sync_tool_raising_stop_iteration_is_an_error_at_once() -> None:
    @tool(timeout=WAIT)
    def stop() -> str:
        """Raise StopIteration (which no asyncio future can hold)."""
        raise StopIteration("none left")

    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await call(ToolRegistry([stop]), "stop")
    # Was a `timeout` after the whole limit, with "Exception in callback" logged.
    assert result["error_type"] == "tool_exception"
    assert "StopIteration" in result["content"]
    assert loop.time() - started < WAIT / 2


FORKED = textwrap.dedent(
    """
    import asyncio
    import os

    from loomgraph.protocols.threads import run_in_thread


    async def pid() -> int:
        return await asyncio.wait_for(run_in_thread(os.getpid), 5)


    asyncio.run(pid())  # leaves an idle worker, which a forked child does not have
    child = os.fork()
    if child == 0:
        try:
            os._exit(0 if asyncio.run(pid()) == os.getpid() else 1)
        except BaseException:
            os._exit(2)
    print(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_its_own_workers() -> None:
    done = run_program(FORKED)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"


async def test_a_sync_tool_cut_off_is_reported_running_on(
    release: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    started: list[int] = []
    host = hanging_host(release, started)
    try:
        with caplog.at_level("WARNING", logger="loomgraph.tools.registry"):
            result = await call(host, "hang")
        assert result.get("error_type") == "timeout"
        [warning] = [r.getMessage() for r in caplog.records if "'hang'" in r.getMessage()]
        assert "cannot be stopped" in warning and "runs on in the background" in warning
    finally:
        release.set()


# ------------------------------------------- abandoned calls are capped per tool (finding)

STRAY_LIMIT = 0.05  # short: each capped call below waits this long for nothing


async def until_no_strays(host: ToolRegistry, name: str) -> None:
    """Wait (bounded) until every abandoned call of `name` has returned."""
    deadline = time.monotonic() + WAIT
    while host.stray_calls(name):
        assert time.monotonic() < deadline, f"abandoned calls of {name} never returned"
        await asyncio.sleep(0.01)


async def test_a_hung_sync_tool_holds_at_most_max_abandoned_threads(
    release: threading.Event,
) -> None:
    """A sync tool that hangs on every call used to start a new thread for each call, for
    ever: a long-lived server ran out of threads (and then the journal's and the audit
    log's own thread hops failed). Past `max_abandoned` calls still running after their
    limit, a call of that tool is refused at once, without a thread; other tools go on."""
    started: list[int] = []

    @tool(timeout=STRAY_LIMIT)
    def hang() -> str:
        """Block until released."""
        started.append(threading.get_ident())
        release.wait(WAIT)
        return "released"

    @tool
    def quick() -> str:
        """Answer at once."""
        return "ran"

    host = ToolRegistry([hang, quick], max_abandoned=3)
    try:
        kinds = [(await call(host, "hang")).get("error_type") for _ in range(5)]
        assert kinds == ["timeout"] * 3 + ["unavailable"] * 2
        assert len(started) == 3  # the refused calls started no thread
        assert host.stray_calls("hang") == 3
        refused = await call(host, "hang")
        assert "3 earlier calls" in refused["content"] and "'hang'" in refused["content"]
        assert (await call(host, "quick"))["content"] == "ran"  # other tools are not capped
    finally:
        release.set()
    await until_no_strays(host, "hang")
    assert (await call(host, "hang"))["content"] == "released"  # usable again


async def test_an_async_tool_that_ignores_cancellation_is_capped_too() -> None:
    """An `async def` tool that swallows CancelledError is abandoned as a task that runs
    on; past `max_abandoned` of them still running, its calls are refused."""
    release = asyncio.Event()
    entered = 0

    @tool(timeout=STRAY_LIMIT)
    async def stubborn() -> str:
        """Ignore cancellation until released."""
        nonlocal entered
        entered += 1
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue
        return "released"

    host = ToolRegistry([stubborn], max_abandoned=2)
    try:
        kinds = [(await call(host, "stubborn")).get("error_type") for _ in range(3)]
        assert kinds == ["timeout", "timeout", "unavailable"]
        assert entered == 2
    finally:
        release.set()
    await until_no_strays(host, "stubborn")
    assert (await call(host, "stubborn"))["content"] == "released"


def test_max_abandoned_must_be_a_positive_count() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_abandoned"):
            ToolRegistry(max_abandoned=bad)  # type: ignore[arg-type]
