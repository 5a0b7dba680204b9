"""Following a run's journaled events reads each transition once: a wake reads only the
transitions after the last one seen (an SQL range read), not the whole run again, and the
events given are those a full read of the finished run gives."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from loomgraph.agent.run_events import follow_events, journal_events
from loomgraph.protocols import RunRecord, RunStart, RunStatus, Transition, Usage
from loomgraph.runtime.memory import InMemoryRuntime
from loomgraph.runtime.sqlite import SqliteRuntime

STEPS = 12


def _transition(seq: int) -> Transition:
    node = "model" if seq % 2 else "tools"
    return Transition("r1", seq, node, (seq + 1) // 2, {"n": seq}, "next", Usage(), time.time())


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_follower_reads_each_transition_once(tmp_path: Path, kind: str) -> None:
    runtime: Any = InMemoryRuntime() if kind == "memory" else SqliteRuntime(tmp_path / "j.db")
    record = RunRecord("r1", "g", "h", None, None, initial=RunStart({"input": "go"}))
    await runtime.start_run(record)
    read: list[int] = []
    newer = runtime.transitions_after

    async def counted(run_id: str, seq: int) -> list[Transition]:
        got: list[Transition] = await newer(run_id, seq)
        read.extend(t.seq for t in got)
        return got

    async def whole(run_id: str) -> list[Transition]:
        raise AssertionError("a follower read every transition again")

    runtime.transitions_after, runtime.transitions = counted, whole
    appended = 0

    async def advance(run_id: str, timeout: float) -> None:
        """The run moves on: one, two or three more transitions a wake, then it ends."""
        nonlocal appended
        for _ in range(1 + appended % 3):
            if appended == STEPS:
                await runtime.finish_run("r1", RunStatus.COMPLETED, "", {"output": "ok"})
                return
            appended += 1
            await runtime.append_transition(_transition(appended))

    followed = [e async for e in follow_events(runtime, "r1", changed=advance)]
    assert sorted(read) == list(range(1, STEPS + 1))  # each once
    del runtime.transitions_after, runtime.transitions
    final = await runtime.load_run("r1")
    full = journal_events(final, await runtime.transitions("r1"), await runtime.effects("r1"))
    assert [(e.id, e.event.kind) for e in followed] == [(e.id, e.event.kind) for e in full]
    assert followed[-1].event.kind == "run_completed"
    if kind == "sqlite":
        await runtime.close()
