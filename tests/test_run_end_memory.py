"""A run whose end is journaled returns its result even when memory cannot keep its episode
then (an outage, a lock held past the busy timeout): the failure is reported as a
`memory_remember_failed` event, never raised in place of the result."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from loomgraph import Agent
from loomgraph.governance import Hooks
from loomgraph.memory import SqliteMemory
from loomgraph.models import ScriptedModel
from loomgraph.protocols import Event, RunStatus
from loomgraph.runtime.sqlite import SqliteRuntime


async def test_memory_out_at_the_runs_end_is_reported_and_the_result_returned(
    tmp_path: Path,
) -> None:
    memory = SqliteMemory(tmp_path / "memory.db", busy_timeout=0.2)
    await memory.connect()
    heard: list[Event] = []
    hooks = Hooks()
    hooks.on_event(heard.append)
    blocker = sqlite3.connect(tmp_path / "memory.db", isolation_level=None)

    def answer(request: Any) -> str:
        blocker.execute("BEGIN IMMEDIATE")  # memory's write lock, past its busy timeout
        return "Paris"

    runtime = SqliteRuntime(tmp_path / "journal.db")
    agent = Agent("x", model=ScriptedModel(answer), memory=memory, runtime=runtime, hooks=hooks)
    try:
        result = await agent.run("capital of France?", user_id="alice", session_id="s1")
        [record] = await runtime.runs()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        await agent.aclose()
    assert result.status == RunStatus.COMPLETED and result.output == "Paris"
    assert record.status == RunStatus.COMPLETED
    [failed] = [e for e in heard if e.kind == "memory_remember_failed"]
    assert "MemoryUnavailable" in failed.payload["error"] and failed.run_id == result.run_id
    assert [e.kind for e in heard][-1] == "run_completed"  # reported before the run's end
