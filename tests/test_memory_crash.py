"""A completed run's episode between memory and the journal: a crash or a memory outage at
the run's end never loses the turn for good, a resume keeps it (and draws its facts once),
and a resume never brings back a turn the user had memory forget.

Real SQLite files throughout; the crash is a real SIGKILL of a subprocess
(tests/memory_crash_support.py), the outage a real lock held past memory's busy timeout.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from loomgraph import Agent
from loomgraph.governance import Hooks
from loomgraph.memory import SqliteMemory
from loomgraph.models import ScriptedModel
from loomgraph.protocols import EffectStatus, Event, ModelRequest, RunStatus
from loomgraph.runtime.sqlite import SqliteRuntime

SUPPORT = Path(__file__).with_name("memory_crash_support.py")
FACTS = {"facts": [{"subject": "user", "predicate": "asked about", "object": "Porto"}]}


class Extraction:
    """An extraction model that counts its calls (each one a model call paid for)."""

    def __init__(self) -> None:
        self.calls = 0
        self.model = ScriptedModel(self._answer)

    def _answer(self, request: ModelRequest) -> dict[str, Any]:
        self.calls += 1
        return {"tool_calls": [{"tool": "record_facts", "args": FACTS}]}


async def test_a_run_that_crashed_before_memory_kept_it_is_remembered_on_resume(
    tmp_path: Path,
) -> None:
    """A run completes; the process is killed as the Agent hands the episode to memory. The
    user resumes the run (as docs say to after a crash): it returns the run's result, the
    turn is in the session's history, and its facts are extracted, once. Before the fix the
    end was journaled before memory was written, so `resume` returned the journaled result
    and the turn (and its pending fact extraction) was gone for good, with no event."""
    journal, store = tmp_path / "journal.db", tmp_path / "memory.db"
    proc = subprocess.run(
        [sys.executable, str(SUPPORT), str(journal), str(store)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr  # killed on purpose, in memory's remember
    run_id = json.loads(proc.stdout.splitlines()[0])["run_id"]
    memory, extraction = SqliteMemory(store), Extraction()
    agent = Agent(
        "x",
        model=ScriptedModel(["unused"]),
        memory=memory,
        runtime=f"sqlite:{journal}",
        auto_extract=True,
        extract_model=extraction.model,
    )
    result = await agent.resume(run_id)
    again = await agent.resume(run_id)  # finished now: nothing is kept or extracted again
    await agent.aclose()  # waits for the extraction
    assert (result.status, result.output) == ("completed", "Sunny in Porto.")
    assert again.output == "Sunny in Porto."
    kept = [(e.run_id, e.output) for e in await memory.episodes("alice", session_id="s1")]
    history = await memory.history(user_id="alice", session_id="s1")
    facts = [(f.object, f.source_run) for f in await memory.facts("alice")]
    await memory.close()
    assert kept == [(run_id, "Sunny in Porto.")], "the completed turn was never remembered"
    assert [m["content"] for m in history] == ["What is the weather in Porto?", "Sunny in Porto."]
    assert (facts, extraction.calls) == ([("Porto", run_id)], 1)


async def test_an_episode_memory_could_not_keep_is_kept_when_the_finished_run_is_resumed(
    tmp_path: Path,
) -> None:
    """Memory is locked past its busy timeout as the run ends: the run returns its result
    and a `memory_remember_failed` event says the turn was not kept (as before). Now the
    journal owes the episode: a resume of the finished run while memory is still out says
    so again; one after the outage keeps it and extracts its facts, once; a third resume
    does nothing. Before the fix a resume of the finished run never kept it."""
    memory = SqliteMemory(tmp_path / "memory.db", busy_timeout=0.2)
    await memory.connect()
    heard: list[Event] = []
    hooks = Hooks()
    hooks.on_event(heard.append)
    blocker = sqlite3.connect(tmp_path / "memory.db", isolation_level=None)

    def answer(request: ModelRequest) -> str:
        blocker.execute("BEGIN IMMEDIATE")  # memory's write lock, past its busy timeout
        return "Paris"

    runtime = SqliteRuntime(tmp_path / "journal.db")
    extraction = Extraction()
    agent = Agent(
        "x",
        model=ScriptedModel(answer),
        memory=memory,
        runtime=runtime,
        hooks=hooks,
        auto_extract=True,
        extract_model=extraction.model,
    )
    try:
        result = await agent.run("capital of France?", user_id="alice", session_id="s1")
        run_id = result.run_id
        still_out = await agent.resume(run_id)
        failed = [e.run_id for e in heard if e.kind == "memory_remember_failed"]
        owed = await runtime.effect(run_id, f"{run_id}:episode")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    try:
        assert (result.status, still_out.status) == (RunStatus.COMPLETED, RunStatus.COMPLETED)
        assert failed == [run_id, run_id]  # at the run's end, and at the resume
        assert owed is not None and owed.status == EffectStatus.FAILED
        assert await memory.episodes("alice") == [] and extraction.calls == 0
        resumed = await agent.resume(run_id)
        await agent.resume(run_id)
        await agent.aclose()  # waits for the extraction
        kept = [(e.run_id, e.prompt, e.output) for e in await memory.episodes("alice")]
        paid = await runtime.effect(run_id, f"{run_id}:episode")
        assert resumed.output == "Paris"
        assert kept == [(run_id, "capital of France?", "Paris")]
        assert paid is not None and paid.status == EffectStatus.DONE
        assert extraction.calls == 1 and [f.object for f in await memory.facts("alice")]
    finally:
        await memory.close()
        await runtime.close()


async def test_a_resume_never_brings_back_a_turn_memory_forgot(tmp_path: Path) -> None:
    """A run's episode is kept (no journal write for it); the user has memory forget the
    session; a later resume of that finished run returns its result and keeps the session
    empty. (A resume that kept any finished run's episode memory lacks would not.)"""
    memory = SqliteMemory(tmp_path / "memory.db")
    runtime = SqliteRuntime(tmp_path / "journal.db")
    agent = Agent("x", model=ScriptedModel(["Sunny."]), memory=memory, runtime=runtime)
    try:
        result = await agent.run("Weather?", user_id="alice", session_id="s1")
        assert [e.run_id for e in await memory.episodes("alice")] == [result.run_id]
        kinds = [e.kind for e in await runtime.effects(result.run_id)]
        assert "memory_episode" not in kinds  # memory kept it: nothing owed, nothing written
        await memory.forget("alice", session_id="s1")
        again = await agent.resume(result.run_id)
        assert again.output == "Sunny." and await memory.episodes("alice") == []
    finally:
        await agent.aclose()
        await runtime.close()
