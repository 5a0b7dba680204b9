"""Every failure of a tool is a tool error the model sees, BaseExceptions included; only the
cancellation of the run itself goes through (finding 7 of issue 13)."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.models import ScriptedModel
from loomgraph.tools.registry import ToolRegistry


class Custom(BaseException):
    """A BaseException of a library's own."""


def raiser(exc: BaseException) -> Callable[[], None]:
    def boom() -> None:
        raise exc

    return boom


def sync_exit(code: int) -> str:
    """Exit the process (from a worker thread)."""
    sys.exit(code)


async def async_exit(code: int) -> str:
    """Exit the process (in the event loop)."""
    sys.exit(code)


def sync_interrupt() -> str:
    """Ctrl-C, from a worker thread."""
    raise KeyboardInterrupt


async def async_interrupt() -> str:
    """Ctrl-C, in the event loop."""
    raise KeyboardInterrupt


async def generator_exit() -> str:
    """GeneratorExit misused as an ordinary exception."""
    raise GeneratorExit("closed")


def custom() -> str:
    """A BaseException subclass."""
    raise Custom("mine")


async def own_cancelled() -> str:
    """A CancelledError the tool raises itself, while nobody cancels the run."""
    raise asyncio.CancelledError("not the run's")


CASES = [
    (sync_exit, {"code": 3}, "SystemExit: 3"),
    (async_exit, {"code": 4}, "SystemExit: 4"),
    (sync_interrupt, {}, "KeyboardInterrupt"),
    (async_interrupt, {}, "KeyboardInterrupt"),
    (generator_exit, {}, "GeneratorExit: closed"),
    (custom, {}, "Custom: mine"),
    (own_cancelled, {}, "CancelledError: not the run's"),
]


@pytest.mark.parametrize(("fn", "args", "message"), CASES, ids=[c[0].__name__ for c in CASES])
async def test_a_base_exception_in_a_tool_is_an_error_result(
    fn: Callable[..., Any], args: dict[str, Any], message: str
) -> None:
    registry = ToolRegistry([fn])
    result = await registry.call(
        {"id": "c1", "tool": fn.__name__, "args": args}, idempotency_key="k"
    )
    assert result["is_error"] and result["error_type"] == "tool_exception"
    assert result["content"] == message


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_cancelling_the_run_still_cancels_a_tool_call(kind: str) -> None:
    started, release = threading.Event(), threading.Event()
    entered = asyncio.Event()

    def blocking() -> str:
        """Wait in a worker thread."""
        started.set()
        release.wait(10)
        return "late"

    async def waiting() -> str:
        """Wait in the loop."""
        entered.set()
        await asyncio.Event().wait()
        return "never"

    registry = ToolRegistry([blocking, waiting])
    name = "blocking" if kind == "sync" else "waiting"
    task = asyncio.create_task(
        registry.call({"id": "c1", "tool": name, "args": {}}, idempotency_key="k")
    )
    if kind == "sync":
        await asyncio.to_thread(started.wait, 10)
    else:
        await asyncio.wait_for(entered.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()


async def test_sys_exit_in_a_tool_leaves_the_run_going() -> None:
    script: list[Any] = [
        {"text": "", "tool_calls": [{"tool": "sync_exit", "args": {"code": 2}}]},
        {"text": "", "tool_calls": [{"tool": "async_interrupt", "args": {}}]},
        "The tools failed, so I answer without them.",
    ]
    agent = Agent("", model=ScriptedModel(script), tools=[sync_exit, async_interrupt])
    result = await agent.run("go")
    assert result.status == "completed"
    assert result.output == "The tools failed, so I answer without them."
    history = await agent.history(result.run_id)
    tools = [m for m in history[-1].state["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tools] == ["SystemExit: 2", "KeyboardInterrupt"]
