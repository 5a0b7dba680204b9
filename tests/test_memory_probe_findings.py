"""Probe findings on forgetting: what `forget` removes, what it cancels, what it leaves current.

Every test runs on InMemoryMemory, SqliteMemory on a real file and PostgresMemory against the
real server (a schema of its own, see tests/pg.py); background extraction is held on an
event, never a sleep.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import pg
from loomgraph import Agent
from loomgraph.memory import Extractor, Fact, InMemoryMemory, MemoryStore, memory_tools
from loomgraph.memory.sqlite import SqliteMemory
from loomgraph.models.scripted import ScriptedModel
from loomgraph.protocols import Episode, ToolRun, tool_run

pg_schema = pg.pg_schema
Factory = Callable[[], MemoryStore]
ALL = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
DURABLE = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _factory(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """A maker of memory objects on one store (in memory: the one object)."""
    if kind == "memory":
        shared = InMemoryMemory()
        return lambda: shared
    if kind == "sqlite":
        return lambda: SqliteMemory(tmp_path / "memory.db")
    from loomgraph.memory.postgres import PostgresMemory

    schema = request.getfixturevalue("pg_schema")
    return lambda: PostgresMemory(pg.postgres_dsn(), schema=schema)


@pytest.fixture(params=ALL)
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    return _factory(request.param, request, tmp_path)


@pytest.fixture(params=DURABLE)
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    return _factory(request.param, request, tmp_path)


def ep(session: str, run: str, prompt: str, at: float = 1000.0) -> Episode:
    return Episode("alice", session, run, prompt, "Noted.", [], at)


class GatedFacts:
    """A model that calls `record_facts` with `facts` once `gate` is set."""

    name = "gated"

    def __init__(self, gate: asyncio.Event, *facts: tuple[str, str, str]) -> None:
        self.gate, self.started = gate, asyncio.Event()
        self.facts = [{"subject": s, "predicate": p, "object": o} for s, p, o in facts]

    async def stream(self, request: Any) -> AsyncIterator[dict[str, Any]]:
        self.started.set()
        await self.gate.wait()
        call = {"id": "c1", "tool": "record_facts", "args": {"facts": self.facts}}
        yield {"type": "tool_call", "call": call}


def objects(facts: list[Fact]) -> list[tuple[str, bool]]:
    return sorted((f.object, f.current) for f in facts)


# --------------------------------------------------------------------------- 1: forget is final


async def test_facts_of_a_forgotten_episode_are_not_written(make: Factory) -> None:
    async with make() as memory:
        await memory.remember(ep("s1", "r1", "I live at 5 Rua Nova"))
        await memory.remember(ep("s2", "r2", "I like tea"))
        await memory.forget("alice", session_id="s1")
        wrote = await memory.add_facts(
            "alice", [Fact("user", "lives at", "5 Rua Nova", source_run="r1")], source_episode="r1"
        )
        assert wrote == []
        kept = await memory.add_facts(
            "alice", [Fact("user", "likes", "tea", source_run="r2")], source_episode="r2"
        )
        assert [f.object for f in kept] == ["tea"]
        assert objects(await memory.facts("alice", include_superseded=True)) == [("tea", True)]
        with pytest.raises(ValueError, match="source_episode"):
            await memory.add_facts("alice", [Fact("u", "p", "o")], source_episode="")


async def test_forget_by_another_memory_object_is_final_for_a_pending_extraction(
    durable: Factory,
) -> None:
    """The probe: forget in another process (its own connection, no forget hook of the
    worker's extractor); the extraction finishing afterwards writes nothing."""
    gate = asyncio.Event()
    model = GatedFacts(gate, ("user", "lives at", "5 Rua Nova, Porto"))
    done: list[list[Fact]] = []
    async with durable() as worker, durable() as admin:
        episode = ep("s1", "r1", "My new address is 5 Rua Nova, Porto")
        await worker.remember(episode)
        await admin.set_block("alice", "persona", "kept until forgotten")
        extractor = Extractor(on_facts=lambda e, f: done.append(f))
        extractor.schedule(worker, model, episode)
        await model.started.wait()
        assert await admin.forget("alice") == 2
        gate.set()
        await extractor.drain()
        assert done == [[]]  # the extraction ran to its end and wrote nothing
        left = await admin.export("alice")
        assert (left["episodes"], left["facts"], left["blocks"]) == ([], [], [])
        assert await worker.facts("alice", include_superseded=True) == []


# --------------------------------------------------------------------------- 2: unfinished runs


async def test_forgetting_a_session_removes_facts_its_failed_run_wrote(make: Factory) -> None:
    memory = make()
    script = ScriptedModel(
        [
            {
                "tool_calls": [
                    {
                        "tool": "remember_fact",
                        "args": {
                            "subject": "user",
                            "predicate": "has diagnosis",
                            "object": "type 2 diabetes",
                        },
                    }
                ]
            },
            RuntimeError("model provider down"),
        ]
    )
    agent = Agent("x", model=script, memory=memory, memory_tools=True, auto_extract=False)
    result = await agent.run("Remember my diagnosis.", user_id="alice", session_id="s1")
    await agent.aclose()
    assert result.status == "failed"
    async with make() as memory:
        facts = await memory.facts("alice")
        assert [(f.object, f.session_id) for f in facts] == [("type 2 diabetes", "s1")]
        await memory.add_fact("alice", "user", "likes", "tea", session_id="s2")
        assert await memory.forget("alice", session_id="s1") == 1
        assert objects(await memory.facts("alice", include_superseded=True)) == [("tea", True)]
        seed = await memory.seed(user_id="alice", session_id="s3", query="diabetes diagnosis tea")
        assert "diabetes" not in seed and "likes tea" in seed


async def test_memory_tools_stamp_the_session_from_the_getter_or_the_tool_call(
    tmp_path: Path,
) -> None:
    async def progress(message: str, data: dict[str, Any]) -> None:
        return None

    async with SqliteMemory(tmp_path / "m.db") as memory:
        remember, _, _ = memory_tools(
            memory, lambda: "alice", run_id_getter=lambda: "r9", session_id_getter=lambda: "s9"
        )
        await remember("user", "owns", "a boat")
        bare, _, _ = memory_tools(memory, lambda: "alice")
        await bare("user", "rides", "a bike")  # outside a run: nothing invented
        token = tool_run.set(ToolRun("r7", "alice", "s7", "agent", progress))
        try:  # inside a tool call: the engine's record of the call's run
            await bare("user", "reads", "poems")
        finally:
            tool_run.reset(token)
        stamped = {(f.object, f.source_run, f.session_id) for f in await memory.facts("alice")}
        assert stamped == {("a boat", "r9", "s9"), ("a bike", None, None), ("poems", "r7", "s7")}


async def test_a_version_1_sqlite_file_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    async with SqliteMemory(path) as memory:
        await memory.remember(ep("s1", "r1", "I live in Porto"))
        await memory.add_fact("alice", "user", "lives in", "Porto", source_run="r1")
        await memory.add_fact("alice", "user", "likes", "tea")
    with sqlite3.connect(path) as db:  # the file as version 1 left it
        db.execute("DROP INDEX memory_facts_session")
        db.execute("ALTER TABLE memory_facts DROP COLUMN session_id")
        db.execute("UPDATE memory_meta SET value = '1' WHERE key = 'schema_version'")
    async with SqliteMemory(path) as memory:
        assert objects(await memory.facts("alice")) == [("Porto", True), ("tea", True)]
        assert await memory.forget("alice", session_id="s1") == 2  # episode and its fact
        await memory.add_fact("alice", "user", "owns", "a cat", session_id="s2")
        assert await memory.forget("alice", session_id="s2") == 1
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM memory_meta").fetchone() == ("3",)
        assert db.execute("SELECT object, session_id FROM memory_facts").fetchall() == [
            ("tea", None)
        ]


@pytest.mark.postgres
async def test_a_version_1_postgres_schema_is_migrated(pg_schema: str) -> None:
    import asyncpg

    from loomgraph.memory.postgres import PostgresMemory

    async with PostgresMemory(pg.postgres_dsn(), schema=pg_schema) as memory:
        await memory.remember(ep("s1", "r1", "I live in Porto"))
        await memory.add_fact("alice", "user", "lives in", "Porto", source_run="r1")
    con = await asyncpg.connect(pg.postgres_dsn())
    try:
        await con.execute(f"ALTER TABLE {pg_schema}.memory_facts DROP COLUMN session_id")
        await con.execute(f"UPDATE {pg_schema}.memory_meta SET value = '1'")
    finally:
        await con.close()
    async with PostgresMemory(pg.postgres_dsn(), schema=pg_schema) as memory:
        assert objects(await memory.facts("alice")) == [("Porto", True)]
        await memory.add_fact("alice", "user", "owns", "a cat", session_id="s2")
        assert await memory.forget("alice", session_id="s2") == 1
        assert await memory.forget("alice", session_id="s1") == 2
        assert (await memory.export("alice"))["facts"] == []


# --------------------------------------------------------------------------- 5: what is cancelled


async def test_forgetting_a_session_cancels_only_that_sessions_extraction(make: Factory) -> None:
    gate = asyncio.Event()
    errors: list[BaseException] = []
    async with make() as memory:
        pizza, porto = ep("s1", "r1", "I had pizza", 1000.0), ep("s2", "r2", "I moved", 2000.0)
        await memory.remember(pizza)
        await memory.remember(porto)
        extractor = Extractor(on_error=lambda e, err: errors.append(err))
        models = [
            GatedFacts(gate, ("user", "ate", "pizza")),
            GatedFacts(gate, ("user", "lives in", "Porto")),
        ]
        first = extractor.schedule(memory, models[0], pizza)
        extractor.schedule(memory, models[1], porto)
        await asyncio.gather(*(m.started.wait() for m in models))
        assert await memory.forget("alice", session_id="s1") == 1
        assert first.cancelled() and extractor.pending == 1
        gate.set()
        await extractor.drain()
        assert errors == []
        assert objects(await memory.facts("alice")) == [("Porto", True)]


async def test_forgetting_before_a_time_cancels_only_older_extractions(make: Factory) -> None:
    gate = asyncio.Event()
    async with make() as memory:
        old, new = ep("s1", "r1", "old", 1000.0), ep("s1", "r2", "new", 3000.0)
        await memory.remember(old)
        await memory.remember(new)
        extractor = Extractor()
        models = [GatedFacts(gate, ("user", "was", "old")), GatedFacts(gate, ("user", "is", "new"))]
        tasks = [extractor.schedule(memory, m, e) for m, e in zip(models, (old, new), strict=True)]
        await asyncio.gather(*(m.started.wait() for m in models))
        await memory.forget("alice", before=2000.0)
        gate.set()
        await extractor.drain()
        assert tasks[0].cancelled() and not tasks[1].cancelled()
        assert objects(await memory.facts("alice")) == [("new", True)]


# --------------------------------------------------------------------------- 6: supersession


async def test_forgetting_the_superseding_session_makes_the_older_fact_current(
    make: Factory,
) -> None:
    async with make() as memory:
        await memory.remember(ep("s1", "r1", "I live in Porto", 1000.0))
        await memory.add_fact("alice", "user", "lives in", "Porto", source_run="r1")
        await memory.remember(ep("s2", "r2", "pretend I live in Paris", 2000.0))
        await memory.add_fact("alice", "user", "lives in", "Paris", source_run="r2")
        assert objects(await memory.facts("alice", include_superseded=True)) == [
            ("Paris", True),
            ("Porto", False),
        ]
        assert await memory.forget("alice", session_id="s2") == 2
        assert objects(await memory.facts("alice", include_superseded=True)) == [("Porto", True)]
        seed = await memory.seed(user_id="alice", session_id="s3", query="where does user live")
        assert "user lives in Porto" in seed


async def test_forgetting_a_middle_fact_splices_the_chain(make: Factory) -> None:
    async with make() as memory:
        for i, city in enumerate(["Porto", "Paris", "Rome"], start=1):
            await memory.add_fact("alice", "user", "lives in", city, session_id=f"s{i}")
        await memory.add_fact("alice", "user", "likes", "tea", session_id="s2")
        await memory.forget("alice", session_id="s2")
        rows = await memory.facts("alice", include_superseded=True)
        assert objects(rows) == [("Porto", False), ("Rome", True)]
        porto, rome = sorted(rows, key=lambda f: f.object)
        assert porto.valid_to == rome.valid_from  # Porto held until Rome, no gap
        await memory.forget("alice", session_id="s3")
        assert objects(await memory.facts("alice", include_superseded=True)) == [("Porto", True)]
