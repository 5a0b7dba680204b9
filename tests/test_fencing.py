"""Fencing: every journal write that advances or ends a run is conditional on the writer's
lease token being current; a finished run's status and result are never overwritten.

In-process tests on each durable backend; `test_takeover.py` does it with real processes.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import journal_kinds
import pg
from loomgraph.protocols import (
    EffectRecord,
    EffectStatus,
    RunRecord,
    RunStatus,
    Transition,
    Usage,
)
from loomgraph.protocols.runtime import Lease, current_fence
from loomgraph.runtime.errors import LeaseLost, RunConflict, RunFinished
from loomgraph.runtime.memory import InMemoryRuntime
from loomgraph.runtime.sqlite import SqliteRuntime

pg_schema = pg.pg_schema
Factory = journal_kinds.Factory
durable = journal_kinds.durable
opened = journal_kinds.opened


def record(run_id: str = "r1") -> RunRecord:
    return RunRecord(run_id, "react", "h", "u1", None)


def step(run_id: str, seq: int, snapshot: dict[str, Any] | None = None) -> Transition:
    return Transition(run_id, seq, "model", seq, {"n": seq}, "tools", Usage(), 1.0, snapshot)


async def counts(rt: Any, run_id: str) -> tuple[int, int, str]:
    """What a zombie could have changed: transitions, effects, and the run's status."""
    run = await rt.load_run(run_id)
    return len(await rt.transitions(run_id)), len(await rt.effects(run_id)), str(run.status)


async def test_tokens_grow_with_every_new_owner(durable: Factory) -> None:
    async with opened(durable) as rt:
        await rt.start_run(record())
        a = await rt.acquire_lease("r1", "a")
        assert a.token == 1
        assert (await rt.acquire_lease("r1", "a")).token == 1  # extending keeps the token
        assert (await rt.renew_lease("r1", "a")).token == 1
        with pytest.raises(RunConflict):
            await rt.acquire_lease("r1", "b")
        b = await rt.acquire_lease("r1", "b", take_from="a")  # a is known dead
        assert b.token == 2 and (await rt.lease("r1")) == Lease("r1", "b", b.expires_at, 2)
        assert await rt.release_lease("r1", "b")
        assert await rt.lease("r1") is None
        c = await rt.acquire_lease("r1", "c")
        assert c.token == 3  # a release keeps the counter: an old token never comes back
        with pytest.raises(LeaseLost):
            await rt.renew_lease("r1", "a")


async def test_a_fenced_out_writer_writes_nothing(durable: Factory) -> None:
    async with opened(durable) as rt:
        await rt.start_run(record())
        old = await rt.acquire_lease("r1", "a")
        await rt.append_transition(step("r1", 1), fence=old)
        assert await rt.begin_effect(EffectRecord("r1", "k1", "tool", {}), fence=old) is None
        new = await rt.acquire_lease("r1", "b", take_from="a")
        before = await counts(rt, "r1")
        with pytest.raises(LeaseLost):
            await rt.append_transition(step("r1", 2), fence=old)
        with pytest.raises(LeaseLost):
            await rt.append_transition(step("r1", 2, {"n": 2}), fence=old)
        with pytest.raises(LeaseLost):
            await rt.begin_effect(EffectRecord("r1", "k2", "tool", {}), fence=old)
        with pytest.raises(LeaseLost):  # a key seen before: no attempt counted either
            await rt.begin_effect(EffectRecord("r1", "k1", "tool", {}), fence=old)
        with pytest.raises(LeaseLost):
            await rt.end_effect("r1", "k1", {"x": 1}, EffectStatus.DONE, fence=old)
        with pytest.raises(LeaseLost):
            await rt.finish_run("r1", RunStatus.CANCELLED, "zombie", None, fence=old)
        with pytest.raises(LeaseLost):
            await rt.record_recovery("r1", fence=old)
        await rt.record_recovery("r1", fence=new)
        with pytest.raises(LeaseLost):  # a zombie cannot wipe the count of failed recoveries
            await rt.reset_recoveries("r1", fence=old)
        assert (await rt.load_run("r1")).recoveries == 1
        await rt.reset_recoveries("r1", fence=new)
        assert await counts(rt, "r1") == before
        (effect,) = await rt.effects("r1")
        assert (effect.status, effect.attempts, effect.outcome) == ("pending", 1, None)
        assert (await rt.load_run("r1")).recoveries == 0
        # The current holder writes as usual, also through the task's ambient fence.
        token = current_fence.set(new)
        try:
            await rt.append_transition(step("r1", 2))
            await rt.end_effect("r1", "k1", {"x": 1}, EffectStatus.DONE)
            await rt.finish_run("r1", RunStatus.COMPLETED, "", {"output": "ok"})
        finally:
            current_fence.reset(token)
        assert await counts(rt, "r1") == (2, 1, "completed")


async def test_the_ambient_fence_only_applies_to_its_own_run(durable: Factory) -> None:
    async with opened(durable) as rt:
        await rt.start_run(record("r1"))
        await rt.start_run(record("r2"))
        stale = Lease("r1", "gone", 0.0, 99)
        token = current_fence.set(stale)
        try:
            with pytest.raises(LeaseLost):
                await rt.append_transition(step("r1", 1))
            await rt.append_transition(step("r2", 1))  # another run: not fenced by r1's lease
        finally:
            current_fence.reset(token)
        assert len(await rt.transitions("r2")) == 1


@pytest.mark.parametrize("kind", ["memory", "durable"])
async def test_a_finished_run_keeps_its_status_and_result(
    kind: str, durable: Factory, tmp_path: Path
) -> None:
    factory: Factory = InMemoryRuntime if kind == "memory" else durable
    async with opened(factory) as rt:
        await rt.start_run(record())
        await rt.finish_run("r1", RunStatus.COMPLETED, "", {"output": "the answer"})
        for status in (RunStatus.CANCELLED, RunStatus.FAILED, RunStatus.COMPLETED):
            with pytest.raises(RunFinished):
                await rt.finish_run("r1", status, "late", {"output": "another"})
        run = await rt.load_run("r1")
        assert (run.status, run.reason, run.result) == ("completed", "", {"output": "the answer"})


async def test_recoveries_are_counted_and_reset(durable: Factory) -> None:
    async with opened(durable) as rt:
        await rt.start_run(record())
        assert await rt.record_recovery("r1") == 1
        assert await rt.record_recovery("r1") == 2
        assert (await rt.load_run("r1")).recoveries == 2
        await rt.reset_recoveries("r1")
        assert (await rt.load_run("r1")).recoveries == 0


async def test_a_journal_made_before_fencing_gains_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    async with opened(lambda: SqliteRuntime(str(path))) as rt:
        await rt.start_run(record())
        await rt.acquire_lease("r1", "a")
        await rt.begin_effect(EffectRecord("r1", "k", "tool", {}))
    raw = sqlite3.connect(path)
    raw.execute("ALTER TABLE leases DROP COLUMN token")
    raw.execute("ALTER TABLE runs DROP COLUMN recoveries")
    raw.execute("ALTER TABLE effects DROP COLUMN recovered")
    raw.commit()
    raw.close()
    async with opened(lambda: SqliteRuntime(str(path))) as rt:
        assert (await rt.load_run("r1")).recoveries == 0
        assert (await rt.lease("r1")).token == 1
        assert (await rt.acquire_lease("r1", "b", take_from="a")).token == 2
        prior = await rt.begin_effect(EffectRecord("r1", "k", "tool", {}))
        assert prior is not None and prior.recovered and prior.attempts == 2


async def test_an_effect_reexecuted_after_a_crash_stays_marked(durable: Factory) -> None:
    async with opened(durable) as rt:
        await rt.start_run(record())
        assert await rt.begin_effect(EffectRecord("r1", "k", "tool", {})) is None
        prior = await rt.begin_effect(EffectRecord("r1", "k", "tool", {}))  # after a crash
        assert prior is not None and prior.status == "unknown_after_crash" and prior.recovered
        await rt.end_effect("r1", "k", {"ok": 1}, EffectStatus.DONE)
        (done,) = await rt.effects("r1")
        assert (done.status, done.attempts, done.recovered) == ("done", 2, True)


def test_diff_accepts_two_checkpoints() -> None:
    from loomgraph.agent.checkpoints import Checkpoint, diff

    a = Checkpoint(1, "model", 1, "tools", {}, {"x": 1, "y": [1]})
    b = Checkpoint(2, "tools", 1, "END", {}, {"x": 1, "y": [1, 2]})
    assert diff(a, b) == {"y": ([1], [1, 2])}
    assert diff(a.state, b) == diff(a, b.state) == diff(a, b)


@pytest.mark.postgres
async def test_a_postgres_journal_made_before_fencing_gains_the_columns(pg_schema: str) -> None:
    import asyncpg

    from loomgraph.runtime.postgres import PostgresRuntime

    def make() -> Any:
        return PostgresRuntime(pg.postgres_dsn(), schema=pg_schema)

    async with opened(make) as rt:
        await rt.start_run(record())
        await rt.acquire_lease("r1", "a")
    con = await asyncpg.connect(pg.postgres_dsn())
    try:
        for table, column in (
            ("leases", "token"),
            ("runs", "recoveries"),
            ("effects", "recovered"),
        ):
            await con.execute(f'ALTER TABLE "{pg_schema}".{table} DROP COLUMN {column}')
    finally:
        await con.close()
    async with opened(make) as rt:
        assert (await rt.load_run("r1")).recoveries == 0
        assert (await rt.lease("r1")).token == 1
        assert (await rt.acquire_lease("r1", "b", take_from="a")).token == 2
