"""Reflexion's lessons never fail a run for want of room: the `lessons` working block keeps the
newest lessons that fit the memory's block limit (`MemoryLimits.block_chars`), the oldest
dropped first, and the write still goes through the tool gate as `update_block`'s call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loomgraph import Agent
from loomgraph.memory import MemoryLimits, SqliteMemory
from loomgraph.models import ScriptedModel
from loomgraph.protocols.events import PERMISSION_DECISION
from loomgraph.strategies import LESSONS_BLOCK, MAX_LESSONS


def respond(**answer: object) -> dict[str, Any]:
    return {"tool_calls": [{"tool": "respond", "args": answer}]}


def script(lesson: str) -> list[Any]:
    """Attempt 1 falls short; the lesson (remembered); attempt 2 passes."""
    return [
        "first answer",
        respond(score=0.2, feedback="be precise"),
        lesson,
        "second answer",
        respond(score=0.9),
    ]


def lesson(n: int, size: int = 100) -> str:
    head = f"lesson {n:02d}: "
    return head + "x" * (size - len(head))


def block_of(lessons: list[str]) -> str:
    return "\n".join(f"- {item}" for item in lessons)


def lines(text: str) -> list[str]:
    return [line[2:] for line in text.splitlines()]


async def run(memory: Any, new: str) -> tuple[dict[str, Any], list[tuple[str, str]], str]:
    """One reflexion run of alice writing `new`; its result, the gate's decisions on the
    lessons' write, and the block after it."""
    agent = Agent("x", model=ScriptedModel(script(new)), memory=memory, architecture="reflexion")
    result: dict[str, Any] = {}
    decided: list[tuple[str, str]] = []
    async for event in agent.stream("task", user_id="alice", session_id="s1"):
        if event.kind == PERMISSION_DECISION:
            decided.append((event.payload["tool"], event.payload["verdict"]))
        if event.kind == "run_completed":
            result = event.payload["result"]
    blocks = await agent.deps.memory.get_blocks("alice")  # type: ignore[attr-defined]
    return result, decided, blocks.get(LESSONS_BLOCK, "")


async def test_a_full_lessons_block_drops_its_oldest_lessons(tmp_path: Path) -> None:
    memory = SqliteMemory(tmp_path / "memory.db")
    old = [lesson(n) for n in range(MAX_LESSONS - 1)]
    await memory.set_block("alice", LESSONS_BLOCK, block_of(old))  # 1,956 characters
    result, decided, text = await run(memory, lesson(99))
    assert result["status"] == "completed", result["reason"]
    assert decided == [("update_block", "allow")]  # decided by the gate, as before
    assert len(text) <= MemoryLimits().block_chars
    kept = lines(text)
    assert kept[-1] == lesson(99)  # the newest is kept
    assert kept == [*old[len(old) - len(kept) + 1 :], lesson(99)]  # the oldest went first
    assert old[0] not in kept
    await memory.close()


async def test_a_lesson_longer_than_the_block_is_cut_to_fit(tmp_path: Path) -> None:
    memory = SqliteMemory(tmp_path / "memory.db")
    await memory.set_block("alice", LESSONS_BLOCK, block_of([lesson(1)]))
    result, _, text = await run(memory, lesson(2, size=5000))
    assert result["status"] == "completed", result["reason"]
    assert len(text) <= MemoryLimits().block_chars
    (kept,) = lines(text)  # no room for the older one beside it
    assert kept.startswith("lesson 02: xxx") and kept.endswith("…")
    await memory.close()


async def test_the_memory_s_own_block_limit_is_kept(tmp_path: Path) -> None:
    limits = MemoryLimits(block_chars=250)
    memory = SqliteMemory(tmp_path / "memory.db", limits=limits)
    await memory.set_block("alice", LESSONS_BLOCK, block_of([lesson(1), lesson(2)]))  # 205
    result, _, text = await run(memory, lesson(3))
    assert result["status"] == "completed", result["reason"]
    assert lines(text) == [lesson(2), lesson(3)]
    await memory.close()
