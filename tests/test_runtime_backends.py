"""The Runtime journals: one behaviour suite for InMemory, SQLite and Postgres, then each backend.

Postgres tests run against the real server (see tests/pg.py), each in a schema of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import os
import random
import sqlite3
import string
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import journal_kinds
import pg
from loomgraph.protocols import (
    EffectRecord,
    EffectStatus,
    RunReader,
    RunRecord,
    RunStart,
    RunStatus,
    Runtime,
    RunWriter,
    Transition,
    Usage,
)
from loomgraph.runtime.codec import SCHEMA_VERSION
from loomgraph.runtime.errors import (
    JournalCorrupted,
    JournalEncodingError,
    JournalUnavailable,
    JournalVersionError,
    RunConflict,
    RunExists,
    UnknownEffect,
    UnknownRun,
)
from loomgraph.runtime.memory import InMemoryRuntime
from loomgraph.runtime.sqlite import SqliteRuntime

pg_schema = pg.pg_schema
pg_dsn = pg.pg_dsn
Factory = journal_kinds.Factory
make = journal_kinds.make
durable = journal_kinds.durable
opened = journal_kinds.opened


def run(run_id: str = "r1", user: str | None = "u1", **kw: Any) -> RunRecord:
    fields: dict[str, Any] = {"graph_name": "react", "graph_hash": "hash1", "session_id": "s1"}
    return RunRecord(run_id=run_id, user_id=user, **{**fields, **kw})


def step(run_id: str, seq: int, patch: Any = None, **kw: Any) -> Transition:
    return Transition(
        run_id,
        seq,
        "model",
        seq,
        {"n": seq} if patch is None else patch,
        "tools",
        Usage(input_tokens=seq),
        1000.0 + seq,
        **kw,
    )


# --------------------------------------------------------------------------- behaviour suite


async def test_implements_the_protocol(make: Factory) -> None:
    async with opened(make) as rt:
        assert isinstance(rt, Runtime)
        assert isinstance(rt, RunWriter) and isinstance(rt, RunReader)


async def test_start_and_load_run(make: Factory) -> None:
    async with opened(make) as rt:
        record = run(
            parent_run_id="r0",
            parent_seq=3,
            deadline=99.5,
            created_at=12.0,
            initial=RunStart({"input": "héllo ✓"}, "be brief"),
        )
        await rt.start_run(record)
        loaded = await rt.load_run("r1")
        assert loaded is not None
        assert (loaded.graph_name, loaded.graph_hash, loaded.user_id, loaded.session_id) == (
            "react",
            "hash1",
            "u1",
            "s1",
        )
        assert (loaded.parent_run_id, loaded.parent_seq, loaded.deadline) == ("r0", 3, 99.5)
        assert loaded.created_at == 12.0 and loaded.updated_at >= 12.0
        assert loaded.status == "running" and loaded.result is None
        assert loaded.initial == RunStart({"input": "héllo ✓"}, "be brief")
        assert await rt.load_run("nope") is None


async def test_created_at_defaults_to_now(make: Factory) -> None:
    async with opened(make) as rt:
        before = time.time()
        await rt.start_run(run())
        loaded = await rt.load_run("r1")
        assert loaded is not None and loaded.created_at >= before


async def test_transitions_in_order_with_snapshots(make: Factory) -> None:
    async with opened(make) as rt:
        await rt.start_run(run())
        patch = {
            "messages": [{"role": "assistant", "content": "ünïcode ✓", "n": [1, 2.5]}],
            "flag": None,
            "nested": {"a": {"b": True}},
        }
        await rt.append_transition(step("r1", 1, patch))
        await rt.append_transition(step("r1", 2, snapshot={"messages": [], "count": 2}))
        await rt.append_transition(step("r1", 3))
        got = await rt.transitions("r1")
        assert [t.seq for t in got] == [1, 2, 3]
        assert got[0].patch == patch and got[0].snapshot is None
        assert got[1].snapshot == {"messages": [], "count": 2}
        assert got[2] == step("r1", 3)
        assert got[0].usage == Usage(input_tokens=1) and got[0].at == 1001.0


async def test_transitions_of_unknown_run(make: Factory) -> None:
    async with opened(make) as rt:
        with pytest.raises(UnknownRun, match="nope"):
            await rt.transitions("nope")
        await rt.start_run(run())
        assert await rt.transitions("r1") == []


async def test_writes_for_unknown_run_raise_unknown_run(make: Factory) -> None:
    # UnknownRun (a KeyError) naming the run, from every journal: the in-memory one too.
    async with opened(make) as rt:
        writes = [
            rt.append_transition(step("ghost", 1)),
            rt.begin_effect(EffectRecord("ghost", "k", "tool", {})),
            rt.end_effect("ghost", "k", {}, EffectStatus.DONE),
            rt.finish_run("ghost", RunStatus.COMPLETED, "", None),
            rt.record_recovery("ghost"),
            rt.reset_recoveries("ghost"),
        ]
        for write in writes:
            with pytest.raises(UnknownRun, match="ghost"):
                await write
        assert await rt.load_run("ghost") is None and await rt.effects("ghost") == []


async def test_duplicate_seq_is_a_conflict_and_writes_nothing(make: Factory) -> None:
    async with opened(make) as rt:
        await rt.start_run(run())
        await rt.append_transition(step("r1", 1))
        with pytest.raises(RunConflict, match="seq 1") as info:
            await rt.append_transition(step("r1", 1, {"other": 1}, snapshot={"s": 1}))
        assert info.value.run_id == "r1"
        kept = await rt.transitions("r1")
        assert [(t.patch, t.snapshot) for t in kept] == [({"n": 1}, None)]
        # A seq below the last one is refused as well when it is recorded; a gap is filled.
        await rt.append_transition(step("r1", 3))
        with pytest.raises(RunConflict, match="seq 1"):
            await rt.append_transition(step("r1", 1))
        await rt.append_transition(step("r1", 2))
        assert [t.seq for t in await rt.transitions("r1")] == [1, 2, 3]
        assert [t.seq for t in await rt.transitions_after("r1", 1)] == [2, 3]


async def test_end_effect_of_unknown_key_or_run(make: Factory) -> None:
    async with opened(make) as rt:
        await rt.start_run(run())
        with pytest.raises(UnknownEffect, match="'k9'"):
            await rt.end_effect("r1", "k9", {}, "done")
        with pytest.raises(UnknownRun):
            await rt.end_effect("ghost", "k9", {}, "done")


async def test_effect_lifecycle(make: Factory) -> None:
    async with opened(make) as rt:
        await rt.start_run(run())
        intent = {"call": {"tool": "send", "args": {"to": "bob"}}}
        assert await rt.begin_effect(EffectRecord("r1", "k1", "tool", intent)) is None
        again = await rt.begin_effect(EffectRecord("r1", "k1", "tool", intent))
        assert again is not None
        assert (again.status, again.attempts, again.intent) == ("unknown_after_crash", 2, intent)
        third = await rt.begin_effect(EffectRecord("r1", "k1", "tool", intent))
        assert third is not None and third.attempts == 3
        await rt.end_effect("r1", "k1", {"content": "sent"}, "done")
        done = await rt.begin_effect(EffectRecord("r1", "k1", "tool", intent))
        assert done is not None
        assert (done.status, done.attempts, done.outcome) == ("done", 3, {"content": "sent"})


async def test_effects_in_the_order_they_began(make: Factory) -> None:
    async with opened(make) as rt:
        await rt.start_run(run())
        for key in ["z", "a", "m"]:
            await rt.begin_effect(EffectRecord("r1", key, "model", {"k": key}))
        await rt.end_effect("r1", "a", {"error": "boom"}, "failed")
        effects = await rt.effects("r1")
        assert [e.key for e in effects] == ["z", "a", "m"]
        assert effects[1].status == "failed" and effects[1].outcome == {"error": "boom"}
        assert effects[0].status == "pending" and effects[0].outcome is None
        assert await rt.effects("nope") == []


async def test_one_effect_by_key(make: Factory) -> None:
    async with opened(make) as rt:
        await rt.start_run(run())
        await rt.start_run(run("r2"))
        for key in ["z", "a", "m"]:
            await rt.begin_effect(EffectRecord("r1", key, "tool", {"k": key}))
        await rt.begin_effect(EffectRecord("r2", "a", "model", {"k": "other run"}))
        await rt.end_effect("r1", "a", {"content": "sent"}, EffectStatus.DONE)
        found = await rt.effect("r1", "a")
        assert found is not None
        assert (found.run_id, found.key, found.kind) == ("r1", "a", "tool")
        assert found.intent == {"k": "a"}
        assert found.status is EffectStatus.DONE and found.outcome == {"content": "sent"}
        pending = await rt.effect("r1", "m")
        assert pending is not None and pending.status is EffectStatus.PENDING
        assert pending.outcome is None and pending.attempts == 1
        other = await rt.effect("r2", "a")
        assert other is not None and other.kind == "model"
        assert await rt.effect("r1", "nope") is None
        assert await rt.effect("nope", "a") is None


async def test_any_effect_key_reads_back(make: Factory) -> None:
    # SQL journals keep a key that starts with "<run id>:" without that prefix
    # (codec.stored_key); keys that only look like a stored one must still read back whole.
    keys = ["r1:model:1:1", "r1::", "r1", "r1x:a", ":model:1:1", "=r1:a", "", "r2:a"]
    async with opened(make) as rt:
        await rt.start_run(run())
        for key in keys:
            assert await rt.begin_effect(EffectRecord("r1", key, "tool", {"k": key})) is None
        for key in keys:
            await rt.end_effect("r1", key, {"k": key}, EffectStatus.DONE)
            found = await rt.effect("r1", key)
            assert found is not None and (found.key, found.outcome) == (key, {"k": key})
        assert [e.key for e in await rt.effects("r1")] == keys
        again = await rt.begin_effect(EffectRecord("r1", "r1:model:1:1", "tool", {}))
        assert again is not None and again.intent == {"k": "r1:model:1:1"}


async def test_statuses_read_back_as_enums(make: Factory) -> None:
    async with opened(make) as rt:
        await rt.start_run(run())
        loaded = await rt.load_run("r1")
        assert loaded is not None and loaded.status is RunStatus.RUNNING
        await rt.finish_run("r1", RunStatus.BUDGET_EXHAUSTED, "cap", None)
        loaded = await rt.load_run("r1")
        assert loaded is not None and loaded.status is RunStatus.BUDGET_EXHAUSTED
        assert loaded.status.final and loaded.status == "budget_exhausted"
        (listed,) = await rt.runs()
        assert listed.status is RunStatus.BUDGET_EXHAUSTED


async def test_finish_run(make: Factory) -> None:
    async with opened(make) as rt:
        await rt.start_run(run(created_at=5.0))
        await rt.finish_run("r1", "limit_reached", "max 3 visits", {"output": "partial"})
        loaded = await rt.load_run("r1")
        assert loaded is not None
        assert (loaded.status, loaded.reason, loaded.result) == (
            "limit_reached",
            "max 3 visits",
            {"output": "partial"},
        )
        assert loaded.updated_at > loaded.created_at


async def test_runs_in_start_order_and_by_user(make: Factory) -> None:
    async with opened(make) as rt:
        for i, user in enumerate(["ann", "bob", "ann", None]):
            await rt.start_run(run(f"r{i}", user))
        assert [r.run_id for r in await rt.runs()] == ["r0", "r1", "r2", "r3"]
        assert [r.run_id for r in await rt.runs(user_id="ann")] == ["r0", "r2"]
        assert await rt.runs(user_id="zed") == []


async def test_starting_a_journaled_run_again_is_refused(make: Factory) -> None:
    async with opened(make) as rt:
        await rt.start_run(run())
        await rt.append_transition(step("r1", 1))
        await rt.finish_run("r1", "completed", "", {"output": "kept"})
        with pytest.raises(RunExists, match=r"'r1'.*journaled already"):
            await rt.start_run(run(graph_hash="hash2"))
        loaded = await rt.load_run("r1")
        assert loaded is not None
        assert (loaded.status, loaded.graph_hash, loaded.result) == (
            "completed",
            "hash1",
            {"output": "kept"},
        )
        assert [t.seq for t in await rt.transitions("r1")] == [1]


# --------------------------------------------------------------------------- in memory


async def test_memory_keeps_the_most_recent_runs() -> None:
    rt = InMemoryRuntime(max_runs=3)
    for i in range(5):
        await rt.start_run(run(f"r{i}"))
        await rt.finish_run(f"r{i}", "completed", "", None)
    assert [r.run_id for r in await rt.runs()] == ["r2", "r3", "r4"]
    assert await rt.load_run("r0") is None
    with pytest.raises(UnknownRun):
        await rt.transitions("r1")


async def test_memory_keeps_runs_in_progress_and_still_forgets_old_finished_ones() -> None:
    rt = InMemoryRuntime(max_runs=3)
    await rt.start_run(run("long"))  # the oldest run, still running throughout
    for i in range(6):
        await rt.start_run(run(f"r{i}"))
        await rt.finish_run(f"r{i}", "completed", "", None)
    kept = [r.run_id for r in await rt.runs()]
    assert "long" in kept and len(kept) == 3
    assert kept[1:] == ["r4", "r5"]


async def test_memory_runs_all_in_progress_are_all_kept() -> None:
    rt = InMemoryRuntime(max_runs=2)
    for i in range(4):
        await rt.start_run(run(f"r{i}"))
    assert len(await rt.runs()) == 4  # none may be forgotten while it runs
    await rt.finish_run("r0", "completed", "", None)
    await rt.start_run(run("r4"))
    assert "r0" not in [r.run_id for r in await rt.runs()]


# --------------------------------------------------------------------------- durable journals


async def test_latest_snapshot(durable: Factory) -> None:
    async with opened(durable) as rt:
        await rt.start_run(run())
        for seq in range(1, 8):
            await rt.append_transition(
                step("r1", seq, snapshot={"at": seq} if seq % 3 == 0 else None)
            )
        assert await rt.latest_snapshot("r1") == (6, {"at": 6})
        assert await rt.latest_snapshot("r1", at_or_before=5) == (3, {"at": 3})
        assert await rt.latest_snapshot("r1", at_or_before=2) is None
        with pytest.raises(UnknownRun):
            await rt.latest_snapshot("nope")


async def test_journal_survives_a_new_runtime_object(durable: Factory) -> None:
    async with opened(durable) as rt:
        await rt.start_run(run())
        await rt.append_transition(step("r1", 1, snapshot={"x": 1}))
        await rt.begin_effect(EffectRecord("r1", "k", "tool", {"a": 1}))
    async with opened(durable) as again:
        assert [t.snapshot for t in await again.transitions("r1")] == [{"x": 1}]
        prior = await again.begin_effect(EffectRecord("r1", "k", "tool", {"a": 1}))
        assert prior is not None and prior.status == "unknown_after_crash"


async def test_values_that_are_not_json_are_refused(durable: Factory) -> None:
    async with opened(durable) as rt:
        await rt.start_run(run())
        with pytest.raises(JournalEncodingError, match="transition 1: patch"):
            await rt.append_transition(step("r1", 1, {"when": object()}))
        with pytest.raises(JournalEncodingError, match="snapshot"):
            await rt.append_transition(step("r1", 1, snapshot={"x": float("nan")}))
        assert await rt.transitions("r1") == []


async def test_leases(durable: Factory) -> None:
    async with opened(durable) as rt:
        await rt.start_run(run())
        lease = await rt.acquire_lease("r1", "worker-a")
        assert lease.owner == "worker-a" and lease.expires_at > time.time() + 20
        assert (await rt.acquire_lease("r1", "worker-a")).owner == "worker-a"  # re-entrant
        with pytest.raises(RunConflict, match="worker-a") as info:
            await rt.acquire_lease("r1", "worker-b")
        assert info.value.owner == "worker-a"
        assert (await rt.renew_lease("r1", "worker-a", ttl=60)).expires_at > time.time() + 50
        with pytest.raises(RunConflict):
            await rt.renew_lease("r1", "worker-b")
        assert await rt.release_lease("r1", "worker-b") is False
        assert await rt.release_lease("r1", "worker-a") is True
        assert await rt.lease("r1") is None
        await rt.acquire_lease("r1", "worker-b", ttl=0)  # expires at once: a crashed worker
        taken = await rt.acquire_lease("r1", "worker-c")
        assert taken.owner == "worker-c"
        current = await rt.lease("r1")
        assert current is not None and current.owner == "worker-c"
        with pytest.raises(UnknownRun):
            await rt.acquire_lease("ghost", "worker-a")


async def test_two_runtimes_race_for_one_lease(durable: Factory) -> None:
    async with opened(durable) as first, opened(durable) as second:
        await first.start_run(run())
        await second.connect()
        results = await asyncio.gather(
            first.acquire_lease("r1", "a"), second.acquire_lease("r1", "b"), return_exceptions=True
        )
        assert sorted(type(r).__name__ for r in results) == ["Lease", "RunConflict"]


async def test_two_runtimes_race_for_one_effect(durable: Factory) -> None:
    async with opened(durable) as first, opened(durable) as second:
        await first.start_run(run())
        await second.connect()
        effect = EffectRecord("r1", "k", "tool", {"a": 1})
        results = await asyncio.gather(first.begin_effect(effect), second.begin_effect(effect))
        assert sum(r is None for r in results) == 1
        (prior,) = [r for r in results if r is not None]
        assert prior.attempts == 2


# The first loop's Postgres pool cannot be closed once that loop is gone; its sockets are
# freed (with a ResourceWarning) when collected, here, inside this test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_usable_from_two_event_loops(durable: Factory) -> None:
    rt = durable()

    async def first() -> None:
        await rt.start_run(run())

    async def second() -> None:
        await rt.append_transition(step("r1", 1))
        assert len(await rt.transitions("r1")) == 1
        await rt.close()

    asyncio.run(first())
    asyncio.run(second())
    gc.collect()


# --------------------------------------------------------------------------- SQLite


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def _filled_journal(path: Path, transitions: int = 300) -> None:
    async with SqliteRuntime(path) as rt:
        await rt.start_run(run())
        for seq in range(1, transitions + 1):
            await rt.append_transition(step("r1", seq, {"text": "x" * 1000}))
        await rt.checkpoint()


async def test_sqlite_settings(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with SqliteRuntime(str(path), busy_timeout=7) as rt:
        await rt.start_run(run())
        async with rt._db.session() as conn:
            pragmas = {
                p: next(iter(await conn.execute_fetchall(f"PRAGMA {p}")))[0]
                for p in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
            }
    assert pragmas == {
        "journal_mode": "wal",
        "busy_timeout": 7000,
        "foreign_keys": 1,
        "synchronous": 1,
    }
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT value FROM journal_meta").fetchall() == [(str(SCHEMA_VERSION),)]
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "transitions", "effects", "leases", "graphs", "journal_meta"} <= tables


async def test_sqlite_storage_grows_linearly(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    rng = random.Random(4)
    async with SqliteRuntime(path) as rt:
        await rt.start_run(run())
        for seq in range(1, 301):
            text = "".join(rng.choices(string.ascii_letters + " ", k=1000))
            patch = {"messages": [{"role": "assistant", "content": text}]}
            await rt.append_transition(step("r1", seq, patch))
        await rt.checkpoint()
    size = path.stat().st_size
    assert size < 1_000_000, f"300 x 1 KB transitions took {size} bytes"


async def test_sqlite_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a journal\n" * 10)
    before = _sha(path)
    with pytest.raises(JournalCorrupted, match=r"notes\.db"):
        await SqliteRuntime(path).load_run("r1")
    assert _sha(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "cut_last_page", "header_only"])
async def test_sqlite_damaged_journal(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "journal.db"
    await _filled_journal(path)
    data = bytearray(path.read_bytes())
    if damage == "garbage":
        data[4096 * 5 : 4096 * 8] = b"\xde\xad\xbe\xef" * 3072
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "cut_last_page":
        data = data[:-100]
    else:
        data = data[:60]
    path.write_bytes(bytes(data))
    before = _sha(path)
    rt = SqliteRuntime(path)
    with pytest.raises(JournalCorrupted) as info:
        await rt.transitions("r1")
    assert str(path) in str(info.value)
    assert _sha(path) == before
    await rt.close()


async def test_sqlite_unreadable_row(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    await _filled_journal(path, transitions=2)
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE transitions SET patch = '{not json' WHERE seq = 2")
    raw.close()
    with pytest.raises(JournalCorrupted, match=r"journal\.db.*unreadable row"):
        async with SqliteRuntime(path) as rt:
            await rt.transitions("r1")


async def test_sqlite_unknown_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    await _filled_journal(path, transitions=3)
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE journal_meta SET value = '99' WHERE key = 'schema_version'")
    raw.close()
    before = _sha(path)
    with pytest.raises(JournalVersionError, match=rf"version 99.*version {SCHEMA_VERSION}") as info:
        async with SqliteRuntime(path):
            pass
    assert info.value.found == "99" and info.value.supported == SCHEMA_VERSION
    assert "journal.db" in str(info.value)
    assert _sha(path) == before


async def test_sqlite_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "journal.db"
    with pytest.raises(JournalUnavailable, match=r"journal\.db"):
        await SqliteRuntime(path).connect()
    assert not (tmp_path / "no").exists()


async def test_sqlite_append_is_committed_when_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    async with SqliteRuntime(str(path)) as rt:
        await rt.start_run(run())
        await rt.append_transition(step("r1", 1, snapshot={"s": 1}))
        with sqlite3.connect(path) as raw:  # another connection sees it before close()
            assert raw.execute("SELECT seq FROM transitions").fetchall() == [(1,)]
            assert raw.execute("SELECT snapshot FROM transitions").fetchall() == [('{"s":1}',)]
        raw.close()


async def test_sqlite_cancelled_writes_leave_no_transaction_open(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    async with SqliteRuntime(path) as rt:
        await rt.start_run(run())
        for seq in range(1, 40):
            task = asyncio.ensure_future(rt.append_transition(step("r1", seq, snapshot={"s": seq})))
            for _ in range(seq % 8):  # cancel it at a different point each time
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await rt.append_transition(step("r1", 100, snapshot={"s": 100}))
        with sqlite3.connect(path, timeout=0.5) as raw:  # nobody holds the write lock
            raw.execute("INSERT INTO journal_meta VALUES ('probe', 'x')")
        raw.close()
        seqs = [t.seq for t in await rt.transitions("r1")]
        assert seqs[-1] == 100
        assert all(t.snapshot == {"s": t.seq} for t in await rt.transitions("r1"))


_SQLITE_WRITER = """
import asyncio, sys, time
from loomgraph.protocols import EffectRecord, RunRecord, Transition, Usage
from loomgraph.runtime.sqlite import SqliteRuntime

path, run_id, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

async def main():
    async with SqliteRuntime(path) as rt:
        await rt.start_run(RunRecord(run_id, "g", "h", None, None))
        print("ready", flush=True)
        sys.stdin.readline()
        for seq in range(1, count + 1):
            await rt.append_transition(Transition(run_id, seq, "n", seq, {"i": seq}, "n", Usage(),
                                                  time.time()))
            if seq % 10 == 0:
                await rt.begin_effect(EffectRecord(run_id, f"k{seq}", "tool", {}))
                await rt.end_effect(run_id, f"k{seq}", {"ok": True}, "done")
    print("done", flush=True)

asyncio.run(main())
"""


def _start_together(commands: list[list[str]]) -> list[tuple[str, str]]:
    """Run processes that print `ready`, release them at once, and return (stdout, stderr)."""
    procs = [
        subprocess.Popen(
            c, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for c in commands
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line == "ready\n", line + (p.stderr.read() if p.stderr else "")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        return [(out, err) for out, err in (p.communicate(timeout=120) for p in procs)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def test_sqlite_two_processes_write_one_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    count = 300
    results = _start_together(
        [
            [sys.executable, "-c", _SQLITE_WRITER, path, run_id, str(count)]
            for run_id in ("ra", "rb")
        ]
    )
    for out, err in results:
        assert out.strip() == "done", err
        assert "locked" not in err

    async def check() -> None:
        async with SqliteRuntime(path) as rt:
            for run_id in ("ra", "rb"):
                assert [t.seq for t in await rt.transitions(run_id)] == list(range(1, count + 1))
                assert all(e.status == "done" for e in await rt.effects(run_id))
                assert len(await rt.effects(run_id)) == count // 10

    asyncio.run(check())


# --------------------------------------------------------------------------- Postgres


@pytest.mark.postgres
async def test_postgres_unreachable_server_names_host_not_password(pg_dsn: str) -> None:
    from loomgraph.runtime.postgres import PostgresRuntime

    rt = PostgresRuntime("postgresql://postgres:s3cret@127.0.0.1:1/test", connect_timeout=5)
    with pytest.raises(JournalUnavailable) as info:
        await rt.load_run("r1")
    assert "127.0.0.1:1" in str(info.value) and "s3cret" not in str(info.value)


@pytest.mark.postgres
async def test_postgres_wrong_database_or_user(pg_dsn: str) -> None:
    from loomgraph.runtime.postgres import PostgresRuntime

    base = pg_dsn.rsplit("/", 1)[0]
    for dsn, words in [
        (f"{base}/no_such_db_x", "no_such_db_x"),
        ("postgresql://nobody_x:pw1234@127.0.0.1:5432/test", "nobody_x"),
    ]:
        with pytest.raises(JournalUnavailable, match=words) as info:
            await PostgresRuntime(dsn).connect()
        assert "pw1234" not in str(info.value)


@pytest.mark.postgres
async def test_postgres_unknown_schema_version(pg_schema: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    from loomgraph.runtime.postgres import PostgresRuntime

    dsn = pg.postgres_dsn()
    async with PostgresRuntime(dsn, schema=pg_schema) as rt:
        await rt.start_run(run())
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"UPDATE {pg_schema}.journal_meta SET value = '7'")
    finally:
        await conn.close()
    with pytest.raises(
        JournalVersionError, match=rf"{pg_schema}.*version 7.*version {SCHEMA_VERSION}"
    ):
        await PostgresRuntime(dsn, schema=pg_schema).connect()


_PG_LEASER = """
import asyncio, sys
from loomgraph.runtime.errors import RunConflict
from loomgraph.runtime.postgres import PostgresRuntime

dsn, schema, owner = sys.argv[1:4]

async def main():
    async with PostgresRuntime(dsn, schema=schema) as rt:
        print("ready", flush=True)
        sys.stdin.readline()
        try:
            await rt.acquire_lease("contested", owner)
            print("won", flush=True)
        except RunConflict:
            print("lost", flush=True)

asyncio.run(main())
"""


@pytest.mark.postgres
def test_postgres_two_processes_race_for_one_run(pg_schema: str) -> None:
    from loomgraph.runtime.postgres import PostgresRuntime

    dsn = pg.postgres_dsn()

    async def setup() -> None:
        async with PostgresRuntime(dsn, schema=pg_schema) as rt:
            await rt.start_run(run("contested"))

    asyncio.run(setup())
    results = _start_together(
        [
            [sys.executable, "-c", _PG_LEASER, dsn, pg_schema, owner]
            for owner in ("worker-1", "worker-2", "worker-3")
        ]
    )
    outcomes = sorted(out.strip() for out, _ in results)
    assert outcomes == ["lost", "lost", "won"], results


@pytest.mark.postgres
async def test_postgres_schemas_are_separate_journals(pg_schema: str) -> None:
    from loomgraph.runtime.postgres import PostgresRuntime

    dsn = pg.postgres_dsn()
    other = pg.unique_name("loomtest")
    try:
        async with (
            PostgresRuntime(dsn, schema=pg_schema) as a,
            PostgresRuntime(dsn, schema=other) as b,
        ):
            await a.start_run(run())
            assert await b.load_run("r1") is None
    finally:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {other} CASCADE")
        finally:
            await conn.close()


def test_lazy_imports() -> None:
    code = (
        "import sys, loomgraph.runtime, loomgraph.runtime.postgres; "
        "print('asyncpg' in sys.modules, 'aiosqlite' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ}
    ).stdout.split()
    assert out[0] == "False"


@pytest.mark.parametrize(
    "dsn, shown",
    [
        ("postgresql://app:s3cret@db.internal:5432/prod", "postgresql://app@db.internal:5432/prod"),
        ("postgres://app:s3cret@db:notaport/prod", "postgres://app@db:notaport/prod"),
        ("postgres://app:s3@cret@db/prod", "postgres://app@db/prod"),
        ("postgres://app:s3cret@/prod?host=/run/pg", "postgres://app@localhost (/run/pg)/prod"),
        ("host=db password=s3cret", "<not a postgres:// URL>"),
    ],
)
def test_postgres_dsn_is_described_without_password(dsn: str, shown: str) -> None:
    from loomgraph._storage.dsn import describe_dsn

    assert describe_dsn(dsn) == shown
