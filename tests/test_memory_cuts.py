"""Memory durability under cuts (probe "memcut"; each test fails until its defect is fixed).

The reflexion strategy's lessons write (`strategies/lessons.py`, `remember_lessons`) with its
worker SIGKILLed right after memory committed the `lessons` block, before the journal heard of
it; and a lesson memory stores escaped (a NUL) written again by the run's resume.

This file is also the worker: `python tests/test_memory_cuts.py DIR KILL LESSON [RUN_ID]` runs
(or, given RUN_ID, resumes) one reflexion run of alice in DIR (SQLite journal, memory and a
file audit log) whose third model answer is the lesson named LESSON (`LESSONS`); with KILL
`after_set_block` the process SIGKILLs itself right after `set_block` returned (`0`: never).
It prints `{"run_id": …}` first and `{"result": …}` at the end.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from durable_support import audit_actions, expire_lease
from loomgraph import Agent
from loomgraph.memory import SqliteMemory
from loomgraph.memory.in_memory import InMemoryMemory
from loomgraph.models import ScriptedModel
from loomgraph.protocols import AuditAction, EffectStatus
from loomgraph.runtime.sqlite import SqliteRuntime
from loomgraph.strategies import LESSONS_BLOCK
from test_lessons_limit import script

CLEAN = "Lesson: cite the source of every figure."
NUL = "Lesson: strip \x00 bytes from the CSV before parsing."
LESSONS = {"clean": CLEAN, "nul": NUL}  # by name: argv cannot carry a NUL


async def worker_main(where: Path, kill: str, lesson: str, run_id: str | None) -> None:
    """Run (or resume) the worker's reflexion run; its id first, its result at the end."""
    import os

    from loomgraph.observability import FileAuditLog

    class DyingMemory(SqliteMemory):
        """SIGKILLs its process once `set_block` has committed (before the journal knows)."""

        async def set_block(self, user_id: str | None, name: str, text: str) -> Any:
            done = await super().set_block(user_id, name, text)
            if kill == "after_set_block":
                print(json.dumps({"crash": kill}), flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            return done

    memory = DyingMemory(where / "memory.db")
    runtime = SqliteRuntime(where / "journal.db", lease_seconds=6.0)
    agent = Agent(
        "x",
        model=ScriptedModel(script(LESSONS[lesson])),
        memory=memory,
        runtime=runtime,
        architecture="reflexion",
        audit_log=FileAuditLog(where / "audit.jsonl", unsigned=True),
    )
    try:
        if run_id is None:
            session = agent.session("task", user_id="alice", session_id="s1")
            print(json.dumps({"run_id": session.run_id}), flush=True)
            result = await session.execute(_ignore)
        else:
            result = await agent.resume(run_id)
        print(json.dumps({"result": result.to_dict()}), flush=True)
    finally:
        await agent.aclose()
        await memory.close()
        await runtime.close()


async def _ignore(event: Any) -> None:
    """The run's events go nowhere."""


def worker(where: Path, kill: str, lesson: str, run_id: str = "") -> tuple[int, list[Any], str]:
    """Run the worker to its end (its own SIGKILL included): exit code, JSON lines, stderr."""
    args = [sys.executable, __file__, str(where), kill, lesson, *([run_id] if run_id else [])]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    return done.returncode, lines, done.stderr


def killed_after_the_block_and_resumed(where: Path, lesson: str) -> tuple[str, dict[str, Any]]:
    """The run SIGKILLed right after memory committed its lessons, its lease run out, then
    resumed by another process: the run's id and the resumed result."""
    code, lines, err = worker(where, "after_set_block", lesson)
    assert code == -signal.SIGKILL, (code, lines, err)
    assert lines[-1] == {"crash": "after_set_block"}, lines
    run_id = str(lines[0]["run_id"])
    expire_lease(where / "journal.db", run_id)
    code, lines, err = worker(where, "0", lesson, run_id)
    assert code == 0, err
    return run_id, lines[-1]["result"]


async def lessons_block(where: Path) -> str:
    async with SqliteMemory(where / "memory.db") as memory:
        return (await memory.get_blocks("alice")).get(LESSONS_BLOCK, "")


async def test_a_kill_after_memory_kept_the_lessons_leaves_the_write_unsettled_for_ever(
    tmp_path: Path,
) -> None:
    """A reflexion run's `remember` node writes its lesson into alice's `lessons` block (the
    gate allowed it, the journal holds the write begun); the worker is SIGKILLed right after
    memory committed the block, before the journal heard back. Another worker resumes the
    run and it completes, the lesson kept once. But the journal of this completed run keeps
    the lessons write `pending` for ever (an uninterrupted run has it `done`), and nothing
    reports the crash in the middle of the write (no `effect_unknown_after_crash` in the
    audit log, as a kill a moment earlier gets): the resumed `remember` sees the block
    already holding the lesson and returns before `ctx.effect`, so the begun write is never
    settled. Expected: the run ends as an uninterrupted one, its lessons write `done`."""
    run_id, result = killed_after_the_block_and_resumed(tmp_path, "clean")
    assert result["status"] == "completed" and result["output"] == "second answer"
    assert await lessons_block(tmp_path) == f"- {CLEAN}"  # kept once
    runtime = SqliteRuntime(tmp_path / "journal.db")
    try:
        writes = [
            e for e in await runtime.effects(run_id) if e.key.endswith(":remember:1:memory:lessons")
        ]
    finally:
        await runtime.close()
    assert [w.status for w in writes] == [EffectStatus.DONE], [
        (w.key, w.status, w.outcome) for w in writes
    ]
    # The crash in the middle of the write is reported, as a kill a moment earlier is.
    assert audit_actions(tmp_path, run_id).count(AuditAction.EFFECT_UNKNOWN) == 1


async def test_a_resumed_run_writes_a_lesson_holding_a_nul_into_the_block_twice(
    tmp_path: Path,
) -> None:
    """As above, the lesson holding a NUL character (a model quoting a binary file): memory
    stores it escaped (`\\x00`, docs/memory.md), so the resumed `remember` node, merging the
    lesson it has in its state (with the NUL) into the block memory kept before the crash
    (escaped), finds two different lessons and writes both: one run leaves the same lesson
    twice in the block, and every later run learning it adds one more. `lessons_text`
    compares the new lessons as given with the kept ones as stored. Expected: each lesson
    once, as the store keeps it."""
    _, result = killed_after_the_block_and_resumed(tmp_path, "nul")
    assert result["status"] == "completed"
    block = await lessons_block(tmp_path)
    assert block.count("strip") == 1, block


def reflexion_learning(lesson: str, memory: Any, runtime: Any = None) -> Agent:
    """A reflexion agent of `memory` whose one reflection is `lesson`."""
    model = ScriptedModel(script(lesson))
    return Agent("x", model=model, memory=memory, runtime=runtime, architecture="reflexion")


async def test_a_lesson_holding_a_nul_learned_again_by_a_later_run_is_kept_once() -> None:
    """Two ordinary runs of alice learn the same lesson holding a NUL: the block keeps it
    once (the second run compares it as the store keeps it, escaped)."""
    memory = InMemoryMemory()
    for _ in range(2):
        result = await reflexion_learning(NUL, memory).run("task", user_id="alice")
        assert result.status == "completed", result.reason
    block = (await memory.get_blocks("alice"))[LESSONS_BLOCK]
    assert block == "- Lesson: strip \\x00 bytes from the CSV before parsing.", block


class CountingMemory(InMemoryMemory):
    """Counts `set_block` calls; the first `fail` of them raise once the block is kept (its
    answer lost on the way back)."""

    def __init__(self, fail: int = 0) -> None:
        super().__init__()
        self.writes = 0
        self.fail = fail

    async def set_block(self, user_id: str | None, name: str, text: str) -> None:
        await super().set_block(user_id, name, text)
        self.writes += 1
        if self.writes <= self.fail:
            raise ConnectionError("the answer of set_block was lost")


async def lessons_writes(runtime: SqliteRuntime, run_id: str) -> list[EffectStatus]:
    """The statuses of the run's lessons writes, as journaled."""
    effects = await runtime.effects(run_id)
    return [e.status for e in effects if e.key.endswith(":memory:lessons")]


async def test_a_run_learning_a_lesson_already_kept_writes_nothing(tmp_path: Path) -> None:
    """The block already holds the run's lesson: nothing is written, and the lessons write
    is not even journaled (no journal read either: nothing of it was begun)."""
    memory = CountingMemory()
    await memory.set_block("alice", LESSONS_BLOCK, f"- {CLEAN}")
    runtime = SqliteRuntime(tmp_path / "journal.db")
    try:
        result = await reflexion_learning(CLEAN, memory, runtime).run("task", user_id="alice")
        assert result.status == "completed", result.reason
        assert await lessons_writes(runtime, result.run_id) == []
    finally:
        await runtime.close()
    assert memory.writes == 1  # (this test's own)


def learn(state: Any) -> dict[str, Any]:
    """The lesson of `test_a_retried_remember_...` (a step of its graph)."""
    return {"lessons": [CLEAN]}


async def test_a_retried_remember_settles_the_write_whose_answer_was_lost(
    tmp_path: Path,
) -> None:
    """A graph's `remember` node has a retry: memory keeps the block but its answer is lost
    (an error); the retry finds the lesson kept, and settles the write the failed attempt
    began (written again, the same text) rather than leaving it pending for ever."""
    (tmp_path / "remembers.yaml").write_text(
        "name: remembers\nentry: learn\n"
        "state:\n  lessons: {type: 'list[str]', reducer: append, default: []}\n"
        "nodes:\n"
        "  learn: {kind: function, call: 'test_memory_cuts:learn', writes: [lessons]}\n"
        "  remember: {kind: function, call: 'loomgraph.strategies:remember_lessons',"
        " reads: [lessons], writes: [], retry: {attempts: 2}}\n"
        "edges:\n  - {from: learn, to: remember}\n  - {from: remember, to: END}\n"
    )
    memory = CountingMemory(fail=1)
    runtime = SqliteRuntime(tmp_path / "journal.db")
    agent = Agent(
        "x",
        model=ScriptedModel([]),
        memory=memory,
        runtime=runtime,
        architecture=tmp_path / "remembers.yaml",
    )
    try:
        result = await agent.run("task", user_id="alice")
        assert result.status == "completed", result.reason
        assert await lessons_writes(runtime, result.run_id) == [EffectStatus.DONE]
    finally:
        await agent.aclose()
        await runtime.close()
    assert memory.writes == 2  # the lost answer's, then the retry's (the same text)
    assert (await memory.get_blocks("alice"))[LESSONS_BLOCK] == f"- {CLEAN}"


if __name__ == "__main__":
    asyncio.run(
        worker_main(
            Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] if sys.argv[4:] else None
        )
    )
