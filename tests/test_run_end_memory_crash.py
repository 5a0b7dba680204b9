"""A run's memory episode under real faults and a user's `forget`: a turn forgotten after a
crash, an owed episode of a forgotten session, a zombie worker stalled as it keeps the
episode (found by a probe; each test failed before its fix). Worker:
tests/durable_probe_worker.py. Then the store's part on every backend: what a `forget`
records and covers (`memory_forgotten`), and episodes ordered by their writer's lease token
(`Episode.fence`)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import pg
from durable_support import (
    crashed_at,
    refused_in_the_end,
    run_worker,
    taken_over,
)
from loomgraph import Agent
from loomgraph.memory import InMemoryMemory, MemoryInputError, MemoryStore, SqliteMemory
from loomgraph.models import ScriptedModel
from loomgraph.protocols import Episode, ModelRequest, RunStatus
from loomgraph.runtime.sqlite import SqliteRuntime

pg_schema = pg.pg_schema


async def test_a_turn_forgotten_after_a_crash_at_the_runs_end_stays_forgotten_on_resume(
    tmp_path: Path,
) -> None:
    """A run completes and memory keeps its episode; the process is SIGKILLed before the
    run's end is journaled. The user, seeing the turn in session s1, has memory forget s1
    (a privacy request). Later the run is resumed (by the user, or a fleet's recovery of a
    `running` run): the resume ends the run and writes the episode to memory again, so
    the forgotten turn is back in the session's history. docs/memory.md promises "a turn
    `forget` removed stays removed"; `keep_episode` (agent/run_episode.py) writes the
    episode at every resume of a run not journaled finished, with nothing recording that
    it was kept (and forgotten) before."""
    run_id = crashed_at(tmp_path, "after_remember")
    memory = SqliteMemory(tmp_path / "memory.db")
    try:
        kept = [e.run_id for e in await memory.episodes("alice", session_id="s1")]
        assert kept == [run_id]  # memory had it before the crash
        await memory.forget("alice", session_id="s1")
        assert await memory.episodes("alice", session_id="s1") == []
    finally:
        await memory.close()
    code, lines, err = run_worker(tmp_path, "resume", run_id)
    assert code == 0, err
    assert lines[-1]["result"]["status"] == "completed"
    memory = SqliteMemory(tmp_path / "memory.db")
    try:
        back = [(e.run_id, e.output) for e in await memory.episodes("alice", session_id="s1")]
    finally:
        await memory.close()
    assert back == [], f"a resume brought back the turn the user had forgotten: {back}"


async def test_an_owed_episode_of_a_session_the_user_forgot_is_not_stored_by_a_resume(
    tmp_path: Path,
) -> None:
    """Memory is out (locked past its busy timeout) as a run completes: the episode is owed
    in the journal. The user then has memory forget session s1 (everything of that
    conversation). A later resume of the finished run (which docs/memory.md says pays what
    is owed) stores the turn in s1 after the forget: the forgotten conversation is back in
    the history. `pay_episode` (agent/run_episode.py) keeps any owed episode, whatever
    `forget` covered since; nothing lets a forget cancel an owed episode."""
    memory = SqliteMemory(tmp_path / "memory.db", busy_timeout=0.2)
    await memory.connect()
    blocker = sqlite3.connect(tmp_path / "memory.db", isolation_level=None)
    answered: list[ModelRequest] = []

    def answer(request: ModelRequest) -> str:
        if not answered:  # the first run only
            blocker.execute("BEGIN IMMEDIATE")  # memory's write lock, past its busy timeout
        answered.append(request)
        return "Paris"

    runtime = SqliteRuntime(tmp_path / "journal.db")
    agent = Agent("x", model=ScriptedModel(answer), memory=memory, runtime=runtime)
    try:
        try:
            result = await agent.run("capital of France?", user_id="alice", session_id="s1")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert result.status == RunStatus.COMPLETED
        assert await memory.episodes("alice") == []  # owed, not kept
        await memory.forget("alice", session_id="s1")  # the user forgets the conversation
        again = await agent.resume(result.run_id)
        assert again.output == "Paris"
        back = [(e.session_id, e.output) for e in await memory.episodes("alice")]
        assert back == [], f"a resume stored a turn of the forgotten session: {back}"
        # The conversation goes on after the forget: its new turns are kept.
        later = await agent.run("and of Spain?", user_id="alice", session_id="s1")
        kept = [e.run_id for e in await memory.episodes("alice", session_id="s1")]
        assert kept == [later.run_id]
    finally:
        await agent.aclose()
        await memory.close()
        await runtime.close()


async def test_a_worker_stalled_as_it_keeps_the_episode_writes_no_memory_after_a_takeover(
    tmp_path: Path,
) -> None:
    """Worker A completes a run and, its lease just read (`keep_episode`'s zombie check),
    stalls before memory's write (SIGSTOPped). Its lease runs out; worker B resumes the run,
    ends it and keeps the episode; the user then has memory forget session s1. A is
    continued: it writes the episode into memory after all (only then meets LeaseLost at
    `finish_run`), so the forgotten turn is back. The zombie check in
    agent/run_episode.py `_check_lease` is a read before an unfenced write, so a worker
    stopped between the two changes memory for a run another worker owns."""
    with taken_over(tmp_path, "hold_remember", "remembering") as (a, run_id):
        memory = SqliteMemory(tmp_path / "memory.db")
        try:
            assert [e.run_id for e in await memory.episodes("alice")] == [run_id]
            await memory.forget("alice", session_id="s1")
        finally:
            await memory.close()
    refused_in_the_end(a, release=True)  # A's stalled `remember` goes on
    memory = SqliteMemory(tmp_path / "memory.db")
    try:
        back = [e.run_id for e in await memory.episodes("alice", session_id="s1")]
    finally:
        await memory.close()
    assert back == [], "the zombie wrote the forgotten turn back into memory"


async def test_a_stalled_worker_does_not_replace_the_episode_of_the_worker_that_took_over(
    tmp_path: Path,
) -> None:
    """As above, without a forget: worker B took the run over and kept its episode; the
    stalled worker A, continued, wrote its own episode (made before it stalled: its own
    time, possibly its own answer) over B's, as memory replaced an episode by run id from
    any writer. The episode carries its writer's lease token (`Episode.fence`), and memory
    never replaces an episode with one of a lower token."""
    with taken_over(tmp_path, "hold_remember", "remembering") as (a, run_id):
        memory = SqliteMemory(tmp_path / "memory.db")
        try:
            kept = await memory.episodes("alice")
        finally:
            await memory.close()
        assert [e.run_id for e in kept] == [run_id]
        assert kept[0].fence > 1  # B's token: A held the lease first
    refused_in_the_end(a, release=True)
    memory = SqliteMemory(tmp_path / "memory.db")
    try:
        assert await memory.episodes("alice") == kept, "the zombie replaced B's episode"
    finally:
        await memory.close()


# --------------------------------------------------------------------------- the store's part

Factory = Callable[[], MemoryStore]


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """A maker of memory objects of one backend; the durable ones share one store."""
    if request.param == "memory":
        shared = InMemoryMemory()
        return lambda: shared
    if request.param == "sqlite":
        return lambda: SqliteMemory(tmp_path / "memory.db")
    from loomgraph.memory.postgres import PostgresMemory

    schema = request.getfixturevalue("pg_schema")
    return lambda: PostgresMemory(pg.postgres_dsn(), schema=schema)


def turn(run: str, session: str | None = "s1", **fields: Any) -> Episode:
    """Alice's episode of `run` (started at 100, kept at 200 unless told otherwise)."""
    return replace(Episode("alice", session, run, "hi", "hello", [], 200.0, 100.0), **fields)


async def test_a_forgotten_runs_episode_is_never_stored_again(make: Factory) -> None:
    """What a crash, an owed episode or a zombie brings back after a forget is refused,
    whatever its writer's token; the store says so (False). Reopened, it still does."""
    async with make() as memory:
        assert await memory.remember(turn("r1", fence=1)) is True
        assert await memory.forget("alice", session_id="s1") == 1
        assert await memory.remember(turn("r1", fence=2, started_at=None)) is False
    async with make() as memory:
        assert await memory.remember(turn("r1", fence=3, at=time.time())) is False
        assert await memory.episodes("alice") == []


async def test_a_forget_covers_the_runs_started_before_it_and_no_later_one(
    make: Factory,
) -> None:
    """An episode memory did not hold at the forget (owed, or of a run under way) whose run
    had started before it is what the forget would have deleted: refused. A run started
    after it, another session's run, and an episode saying nothing of its start (a caller
    of before this) are stored."""
    async with make() as memory:
        await memory.forget("alice", session_id="s1")  # nothing stored: recorded all the same
        later = time.time() + 60
        assert await memory.remember(turn("owed")) is False
        assert await memory.remember(turn("new", started_at=later, at=later)) is True
        assert await memory.remember(turn("other", session="s2")) is True
        assert await memory.remember(turn("unknown", started_at=None)) is True
    async with make() as memory:
        assert await memory.remember(turn("owed")) is False
        kept = {e.run_id for e in await memory.episodes("alice")}
    assert kept == {"new", "other", "unknown"}


async def test_a_forget_before_a_time_covers_only_what_it_would_have_deleted(
    make: Factory,
) -> None:
    """`forget(before=T)` deletes episodes kept before T: of the runs started before the
    forget, an owed episode kept before T is refused, one kept after T is stored; an
    episode the forget kept (kept after T) is replaced as before."""
    async with make() as memory:
        await memory.remember(turn("kept", at=500.0))
        await memory.forget("alice", before=300.0)
        assert await memory.remember(turn("old", at=200.0)) is False
        assert await memory.remember(turn("young", at=400.0)) is True
        assert await memory.remember(turn("kept", at=600.0, output="again")) is True
        got = [(e.run_id, e.output) for e in await memory.episodes("alice")]
    assert sorted(got) == [("kept", "again"), ("young", "hello")]


async def test_an_episode_is_replaced_only_by_one_of_an_equal_or_higher_fence(
    make: Factory,
) -> None:
    """A writer whose lease was taken over (a lower token) never replaces the episode of
    its successor; the same holder again, or a later one, does."""
    async with make() as memory:
        assert await memory.remember(turn("r1", fence=2, output="B's")) is True
        assert await memory.remember(turn("r1", fence=1, output="A's")) is False
        assert [e.output for e in await memory.episodes("alice")] == ["B's"]
        assert await memory.remember(turn("r1", fence=2, output="B's again")) is True
        assert await memory.remember(turn("r1", fence=3, output="C's")) is True
        (stored,) = await memory.episodes("alice")
    assert (stored.output, stored.fence, stored.started_at) == ("C's", 3, 100.0)
    async with make() as memory:
        with pytest.raises(MemoryInputError, match="fence"):
            await memory.remember(turn("r2", fence=-1))
        with pytest.raises(MemoryInputError, match="started_at"):
            await memory.remember(turn("r2", started_at=float("nan")))


async def test_repeating_a_forget_adds_no_record_of_it(tmp_path: Path) -> None:
    """A forget takes the place of the earlier ones it covers all of: a retention job
    forgetting what is older every day, or a user forgetting one session again and again,
    keeps one row, not one per call. The rows hold ids and times, no text."""
    async with SqliteMemory(tmp_path / "memory.db") as memory:
        await memory.remember(turn("r1"))
        for day in range(3):
            await memory.forget("alice", before=1000.0 + day)
            await memory.forget("alice", session_id="s2")
    with closing(sqlite3.connect(tmp_path / "memory.db")) as db:
        rows = db.execute(
            "SELECT session_id, run_id, older_than FROM memory_forgotten ORDER BY rowid"
        ).fetchall()
    assert rows == [("s1", "r1", None), (None, None, 1002.0), ("s2", None, None)]


async def test_a_version_2_sqlite_file_gets_the_forget_records_when_opened(
    tmp_path: Path,
) -> None:
    """A file as version 2 left it (no `memory_forgotten`, episodes without `started_at`
    and `fence`) is migrated when opened: its episodes are kept (fence 0), and forgetting
    one then keeps it forgotten."""
    path = tmp_path / "v2.db"
    async with SqliteMemory(path) as memory:
        await memory.remember(turn("r1", fence=0))
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("DROP TABLE memory_forgotten")
        db.execute("DROP TABLE memory_fact_sources")
        db.execute("ALTER TABLE memory_episodes DROP COLUMN started_at")
        db.execute("ALTER TABLE memory_episodes DROP COLUMN fence")
        db.execute("UPDATE memory_meta SET value = '2'")
    async with SqliteMemory(path) as memory:
        (old,) = await memory.episodes("alice")
        assert (old.run_id, old.started_at, old.fence) == ("r1", None, 0)
        await memory.forget("alice", session_id="s1")
        assert await memory.remember(turn("r1", fence=5)) is False


@pytest.mark.postgres
async def test_a_version_2_postgres_schema_gets_the_forget_records_when_opened(
    pg_schema: str,
) -> None:
    """As for SQLite; the new table is bound by the row-level security policies."""
    import asyncpg

    from loomgraph.memory.postgres import PostgresMemory

    async with PostgresMemory(pg.postgres_dsn(), schema=pg_schema) as memory:
        await memory.remember(turn("r1"))
    con = await asyncpg.connect(pg.postgres_dsn())
    try:
        await con.execute(
            f"DROP TABLE {pg_schema}.memory_forgotten; "
            f"ALTER TABLE {pg_schema}.memory_episodes DROP COLUMN started_at, DROP COLUMN fence; "
            f"UPDATE {pg_schema}.memory_meta SET value = '2'"
        )
    finally:
        await con.close()
    async with PostgresMemory(pg.postgres_dsn(), schema=pg_schema) as memory:
        assert [e.fence for e in await memory.episodes("alice")] == [0]
        await memory.forget("alice", session_id="s1")
        assert await memory.remember(turn("r1", fence=5)) is False
    con = await asyncpg.connect(pg.postgres_dsn())
    try:
        forced = await con.fetchval(
            "SELECT relforcerowsecurity FROM pg_class WHERE oid = $1::regclass",
            f"{pg_schema}.memory_forgotten",
        )
    finally:
        await con.close()
    assert forced is True
