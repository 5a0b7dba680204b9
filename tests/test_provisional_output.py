"""Streamed model text is provisional: each chunk names its call, and a call whose chunks went
out but whose answer is not what the journal keeps is voided by an `output_void` event.

In-process cases: a stream that broke and was tried again, a call that failed, a call cut
off by its node's timeout. The crash cases (a real SIGKILL at every emit point of a model
call) are in `test_stream_crashes.py`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from loomgraph import Agent
from loomgraph.authoring.library import load_graph
from loomgraph.authoring.loader import graph_from_data
from loomgraph.protocols import (
    MODEL_CHUNK,
    OUTPUT_VOID,
    PROVISIONAL_KINDS,
    Event,
    ModelError,
    ModelRequest,
    Usage,
    VoidReason,
)
from loomgraph.runtime.sqlite import SqliteRuntime


def displayed(events: list[Event]) -> dict[str, str]:
    """What a consumer following the contract shows for each model call: its chunks, the
    ones sent before an `output_void` of the call dropped."""
    shown: dict[str, str] = {}
    for event in events:
        if event.kind == MODEL_CHUNK:
            call = event.payload["call_id"]
            shown[call] = shown.get(call, "") + event.payload["chunk"]["text"]
        elif event.kind == OUTPUT_VOID:
            shown.pop(event.payload["call_id"], None)
    return shown


async def journaled_texts(runtime: SqliteRuntime, run_id: str) -> dict[str, str]:
    """The text of every model call the journal holds an answer for, by call id."""
    return {
        e.key: e.outcome["text"]
        for e in await runtime.effects(run_id)
        if e.kind == "model" and e.status == "done" and e.outcome is not None
    }


class BreakingModel:
    """Streams `first`, then breaks (`retry_step` as given) the first `breaks` times it is
    called; afterwards streams `then` whole."""

    name = "breaking"

    def __init__(self, first: str, then: str, *, breaks: int = 1, retry_step: bool = True):
        self.first, self.then, self.breaks, self.retry_step = first, then, breaks, retry_step

    async def stream(self, request: ModelRequest) -> Any:
        if self.breaks > 0:
            self.breaks -= 1
            for part in self.first.split(" "):
                yield {"type": "text", "text": part + " "}
            raise ModelError("connection dropped", retry_step=self.retry_step)
        yield {"type": "text", "text": self.then}
        yield {"type": "usage", "usage": Usage(input_tokens=5, output_tokens=3)}
        yield {"type": "finish", "finish_reason": "end_turn"}


async def collect(agent: Agent, prompt: str = "hi") -> list[Event]:
    return [event async for event in agent.stream(prompt)]


async def test_every_chunk_is_marked_provisional_and_names_its_call(tmp_path: Path) -> None:
    runtime = SqliteRuntime(tmp_path / "j.db")
    agent = Agent("x", model=BreakingModel("", "Hello there", breaks=0), runtime=runtime)
    try:
        events = await collect(agent)
        run_id = events[0].run_id
        chunks = [e for e in events if e.kind == MODEL_CHUNK]
        assert chunks and all(e.provisional and e.payload["provisional"] for e in chunks)
        assert {e.payload["call_id"] for e in chunks} == {f"{run_id}:model:1:1"}
        assert not any(e.provisional for e in events if e.kind not in PROVISIONAL_KINDS)
        assert OUTPUT_VOID not in {e.kind for e in events}  # nothing to void
        assert displayed(events) == await journaled_texts(runtime, run_id)
    finally:
        await runtime.close()


async def test_a_broken_stream_tried_again_voids_what_it_sent(tmp_path: Path) -> None:
    runtime = SqliteRuntime(tmp_path / "j.db")
    model = BreakingModel("I think the answer", "The answer is 42.")
    agent = Agent("x", model=model, runtime=runtime)
    try:
        events = await collect(agent)
        run_id = events[0].run_id
        kinds = [e.kind for e in events]
        call = f"{run_id}:model:1:1"
        retry = kinds.index("model_retry")
        void = events[retry + 1]
        assert void.kind == OUTPUT_VOID
        assert void.payload == {"call_id": call, "reason": VoidReason.RETRY.value}
        before = [e for e in events[:retry] if e.kind == MODEL_CHUNK]
        after = [e for e in events[retry + 2 :] if e.kind == MODEL_CHUNK]
        assert "".join(e.payload["chunk"]["text"] for e in before) == "I think the answer "
        assert "".join(e.payload["chunk"]["text"] for e in after) == "The answer is 42."
        assert {e.payload["call_id"] for e in before + after} == {call}
        # What the contract makes a consumer show is what the journal keeps.
        assert displayed(events) == await journaled_texts(runtime, run_id)
        assert displayed(events) == {call: "The answer is 42."}
    finally:
        await runtime.close()


async def test_a_failed_call_voids_what_it_sent(tmp_path: Path) -> None:
    runtime = SqliteRuntime(tmp_path / "j.db")
    model = BreakingModel("half an answer", "", retry_step=False)
    agent = Agent("x", model=model, runtime=runtime)
    try:
        events = await collect(agent)
        run_id = events[0].run_id
        voids = [e for e in events if e.kind == OUTPUT_VOID]
        assert [v.payload for v in voids] == [
            {"call_id": f"{run_id}:model:1:1", "reason": VoidReason.FAILED.value}
        ]
        assert events[-1].payload["status"] == "failed"
        assert displayed(events) == {} == await journaled_texts(runtime, run_id)
        # The call, and its one attempt journaled as a failed attempt of its own.
        effects = {e.kind: e.status for e in await runtime.effects(run_id)}
        assert effects == {"model": "failed", "model_attempt": "failed"}
    finally:
        await runtime.close()


class StallingModel:
    """The first call streams a chunk and then never ends (its node's timeout cuts it off);
    later calls answer at once."""

    name = "stalling"

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, request: ModelRequest) -> Any:
        self.calls += 1
        if self.calls == 1:
            yield {"type": "text", "text": "Let me th"}
            await asyncio.Event().wait()  # never set: only the node's timeout ends this
        yield {"type": "text", "text": "Done."}
        yield {"type": "finish", "finish_reason": "end_turn"}


async def test_a_call_cut_off_by_its_nodes_timeout_is_voided_before_the_retry(
    tmp_path: Path,
) -> None:
    data = load_graph("react").to_data()
    data["nodes"]["model"]["timeout"] = 5.0  # the first call stalls; the next answers at once
    data["nodes"]["model"]["retry"] = {"attempts": 3, "errors": ["TimeoutError"]}
    runtime = SqliteRuntime(tmp_path / "j.db")
    agent = Agent("x", model=StallingModel(), architecture=graph_from_data(data), runtime=runtime)
    try:
        events = await collect(agent)
        run_id = events[0].run_id
        assert events[-1].payload["status"] == "completed", events[-1].payload
        kinds = [e.kind for e in events]
        void = events[kinds.index(OUTPUT_VOID)]
        cut, second = f"{run_id}:model:1:1", f"{run_id}:model:1:2"
        assert void.payload == {"call_id": cut, "reason": VoidReason.ABANDONED.value}
        assert kinds.index("node_retry") < kinds.index(OUTPUT_VOID)
        first_of_second = next(
            i
            for i, e in enumerate(events)
            if e.kind == MODEL_CHUNK and e.payload["call_id"] == second
        )
        assert kinds.index(OUTPUT_VOID) < first_of_second
        assert displayed(events) == {second: "Done."} == await journaled_texts(runtime, run_id)
    finally:
        await runtime.close()
