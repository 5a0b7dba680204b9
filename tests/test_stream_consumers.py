"""Event streams as an application consumes them: a consumer that leaves with the buffer
full, and one that leaves as an `on_event` hook finishes; the run ends cancelled and the
stream's close returns."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from loomgraph import Agent
from loomgraph.governance import Hooks
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest, RunStatus
from loomgraph.runtime import InMemoryRuntime

# Bound on how long closing a stream may take; it returns at once when it does not hang.
_HANG_S = 20.0


def _in_own_loop(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run `scenario` on an event loop in a daemon thread and fail when it does not return:
    a stream that never closes would also hang the test's own loop at its teardown (the
    stream's close swallows the cancellation asyncio.run gives leftover tasks)."""
    failure: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(scenario())
        except BaseException as err:  # reported to the test's thread
            failure.append(err)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    thread.join(_HANG_S)
    assert not thread.is_alive(), "the stream's consumer hung: closing the stream never returned"
    if failure:
        raise failure[0]


async def _left_once(agent: Agent, runtime: InMemoryRuntime, ready: asyncio.Event) -> str:
    """Read the stream's first event, wait for `ready`, leave the loop (in `aclosing`, as the
    docs advise); the run's journaled status once the close returned."""
    run_id = ""
    async with contextlib.aclosing(agent.stream("go")) as events:
        async for event in events:
            run_id = event.run_id
            await ready.wait()
            break
    record = await runtime.load_run(run_id)
    assert record is not None
    return record.status


class _Chatty:
    """A model streaming 100 one-character chunks; `flag` is set as it makes chunk 10, by
    which time the stream's buffer is full (the run is waiting for its consumer)."""

    name = "chatty"

    def __init__(self) -> None:
        self.flag = asyncio.Event()

    async def stream(self, request: ModelRequest) -> AsyncIterator[dict[str, Any]]:
        for i in range(100):
            if i == 10:
                self.flag.set()
            yield {"type": "text", "text": "x"}
        yield {"type": "finish", "finish_reason": "end_turn"}


def test_leaving_a_stream_whose_buffer_is_full_returns_and_cancels_the_run() -> None:
    """A user reads `run_started`, is busy with something else while the model streams
    (the run fills the stream's buffer and waits, as documented), then leaves the loop
    inside `contextlib.aclosing` as docs/concepts.md advises. What happened: the run is
    journaled `cancelled`, but closing the stream never returns — the producer's final
    `queue.put(_DONE)` waits for room in the full buffer nobody reads, and the close awaits
    the producer with its own cancellation suppressed, so even a timeout cannot get the
    program out. What should happen: the close returns once the run is journaled
    cancelled."""
    statuses: list[str] = []

    async def scenario() -> None:
        runtime = InMemoryRuntime()
        model = _Chatty()
        agent = Agent("x", model=model, runtime=runtime)
        # The buffer is full once the model's flag is set.
        statuses.append(await _left_once(agent, runtime, model.flag))

    _in_own_loop(scenario)
    assert statuses == [RunStatus.CANCELLED]


def test_leaving_a_stream_as_an_on_event_hook_finishes_cancels_the_run() -> None:
    """A user's async `on_event` hook forwards events to the UI and wakes the consumer,
    which then leaves the loop (in `aclosing`), so the stream cancels the run just as the
    hook returns; the run's next step is a tool that waits until it is cancelled. What
    happened (Python 3.11, which the package supports): the cancel is lost —
    `Hooks._invoke` awaits the callback under `asyncio.wait_for`, which on 3.11 swallows a
    cancel arriving once the awaited callback has finished — so the run goes on into the
    tool and waits there for ever, the journal says `running`, and closing the stream
    (which awaits the run once, its own cancellation suppressed) never returns. What should
    happen: the run is journaled `cancelled` and the close returns."""
    statuses: list[str] = []

    async def scenario() -> None:
        runtime = InMemoryRuntime()
        hooks = Hooks()
        forwarded = asyncio.Event()
        never = asyncio.Event()

        @hooks.on_event
        async def forward(event: Any) -> None:
            if event.kind == "node_started":
                forwarded.set()  # the UI has it: the consumer may act on it

        async def hold() -> str:
            """Wait until cancelled."""
            await never.wait()
            return "unreachable"

        agent = Agent(
            "x",
            model=ScriptedModel([{"tool_calls": [{"tool": "hold"}]}, "done"]),
            tools=[hold],
            runtime=runtime,
            hooks=hooks,
        )
        statuses.append(await _left_once(agent, runtime, forwarded))

    _in_own_loop(scenario)
    assert statuses == [RunStatus.CANCELLED]
