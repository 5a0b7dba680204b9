"""The audit outbox: the entries an audit-log outage cut off a run are kept in its journal
and written at its resume, behind an `audit_restored` marker, then let go of.

The outage is a real `FileAuditLog` the test cuts and restores (`CutLog`); the journals are
the in-memory one and a SQLite file. The trail of an interrupted and resumed run is compared
with the trail of the same run left alone: every entry of the run left alone is there, in
its order, and nothing is there twice but what a resume adds of its own."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import pg
from loomgraph import Agent
from loomgraph.engine.audit_writer import AuditWriter, Kept, keep_unwritten, restore_kept
from loomgraph.governance import BudgetConfig, Caps, StandardBudget
from loomgraph.models import ScriptedModel
from loomgraph.observability import AuditLogUnavailable, FileAuditLog
from loomgraph.protocols import AuditAction, AuditOutbox, RunRecord, RunStatus
from loomgraph.protocols.runtime import current_fence
from loomgraph.runtime import InMemoryRuntime, JournalUnavailable
from loomgraph.runtime.audit_outbox import EndEntries, end_entries
from loomgraph.runtime.errors import LeaseLost, RunFinished, UnknownRun
from loomgraph.runtime.postgres import PostgresRuntime
from loomgraph.runtime.sqlite import SqliteRuntime

pg_schema = pg.pg_schema

Trail = list[tuple[str, tuple[str, ...]]]
# What each resume writes alike: its start, the marker (with a count).
ONCE_OR_MORE = {"run_started", "audit_restored"}


class CutLog(FileAuditLog):
    """A file log the test cuts (`down`), or lets take `allow` more appends first."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, unsigned=True)
        self.down = False
        self.allow: int | None = None  # appends to let through before going down

    def _check(self) -> None:
        if self.allow is not None:
            self.allow -= 1
            if self.allow < 0:
                self.allow, self.down = None, True
        if self.down:
            raise AuditLogUnavailable(str(self._path), "cut by the test")

    async def record(self, action: str, **fields: Any) -> None:
        self._check()
        await super().record(action, **fields)

    async def record_many(
        self, entries: Sequence[tuple[str, str, Mapping[str, Any]]], **fields: Any
    ) -> None:
        self._check()
        await super().record_many(entries, **fields)


def _agent(log: CutLog, runtime: Any, where: str | None) -> Agent:
    """A governed ReAct run with one tool call; the log is cut once, in the tool (`tool`)
    or while the last model call answers (`model`), or never (None)."""
    cut = [where]

    def script(request: Any) -> Any:
        if request.call_index == 0:
            return {"tool_calls": [{"tool": "lookup", "args": {"city": "Paris"}}]}
        if cut[0] == "model":
            cut[0], log.down = None, True
        return "In France"

    def lookup(city: str) -> str:
        """Look a city up."""
        if cut[0] == "tool":
            cut[0], log.down = None, True
        return "France"

    budget = StandardBudget(BudgetConfig(per_user=Caps(tool_calls=5, model_calls=5)))
    return Agent(
        "geo",
        model=ScriptedModel(script),
        tools=[lookup],
        runtime=runtime,
        audit_log=log,
        budget=budget,
    )


def _trail(entries: Any) -> Trail:
    """Each entry's action and payload keys, the marker left out."""
    return [
        (e["action"], tuple(sorted(e["payload"])))
        for e in entries
        if e["action"] != AuditAction.AUDIT_RESTORED
    ]


def _in_order(wanted: Trail, found: Trail) -> bool:
    """Whether `wanted` is in `found` in its order (other entries between)."""
    rest = iter(found)
    return all(any(item == got for got in rest) for item in wanted)


async def _reference(tmp_path: Path) -> Trail:
    """The trail of the run left alone."""
    log = CutLog(tmp_path / "reference.jsonl")
    agent = _agent(log, InMemoryRuntime(), None)
    try:
        result = await agent.run("where?", user_id="alice")
    finally:
        await agent.aclose()
    assert result.status == RunStatus.COMPLETED
    return _trail(log.entries())


def _check_complete(reference: Trail, log: CutLog, run_id: str) -> None:
    """Every entry of the run left alone is in the log, in its order, and no entry is
    there twice (but a resume's `run_started`, the same each time)."""
    entries = list(log.entries(run_id=run_id))
    found = _trail(entries)
    assert _in_order(reference, found), (reference, found)
    made = Counter(
        json.dumps([e["action"], e["actor"], e["payload"]], sort_keys=True)
        for e in entries
        if e["action"] not in ONCE_OR_MORE
    )
    assert [entry for entry, times in made.items() if times > 1] == []
    assert log.verify().ok


def _journal(kind: str, tmp_path: Path) -> Any:
    return InMemoryRuntime() if kind == "memory" else SqliteRuntime(tmp_path / "journal.db")


async def _cut_run(agent: Agent, log: CutLog, runtime: Any) -> tuple[str, list[Any]]:
    """Run until the outage stops the run; its id and the entries its journal keeps."""
    with pytest.raises(AuditLogUnavailable):
        await agent.run("where?", user_id="alice")
    [run] = await runtime.runs()
    assert run.status == RunStatus.RUNNING  # cut off, to be resumed
    kept = await runtime.kept_audit_entries(run.run_id)
    assert kept, "the entries the outage cut off were not kept"
    return run.run_id, kept


# ---------------------------------------------------------------------------- runs


@pytest.mark.parametrize("where", ["tool", "model"])
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_the_entries_an_outage_cut_off_are_written_at_the_resume(
    tmp_path: Path, kind: str, where: str
) -> None:
    reference = await _reference(tmp_path)
    log = CutLog(tmp_path / "audit.jsonl")
    runtime = _journal(kind, tmp_path)
    agent = _agent(log, runtime, where)
    try:
        run_id, kept = await _cut_run(agent, log, runtime)
        assert isinstance(runtime, AuditOutbox)
        log.down = False  # the log is back
        resumed = await agent.resume(run_id)
        assert resumed.status == RunStatus.COMPLETED and resumed.output == "In France"
        assert await runtime.kept_audit_entries(run_id) == []  # let go of once written
    finally:
        await agent.aclose()
    _check_complete(reference, log, run_id)
    entries = list(log.entries(run_id=run_id))
    [at] = [i for i, e in enumerate(entries) if e["action"] == AuditAction.AUDIT_RESTORED]
    assert entries[at]["payload"] == {"count": len(kept)}
    assert entries[at]["actor"] == "runtime"
    # The marker, then the kept entries as they were made, then the resume's start.
    restored = entries[at + 1 : at + 1 + len(kept)]
    assert [(e["action"], e["actor"], e["payload"]) for e in restored] == [
        (action, actor, dict(payload)) for action, actor, payload in kept
    ]
    following = entries[at + 1 + len(kept)]
    assert (following["action"], following["payload"]["continued"]) == ("run_started", True)


async def test_the_kept_entries_outlive_the_journal_object(tmp_path: Path) -> None:
    reference = await _reference(tmp_path)
    log = CutLog(tmp_path / "audit.jsonl")
    first = SqliteRuntime(tmp_path / "journal.db")
    agent = _agent(log, first, "model")
    try:
        run_id, kept = await _cut_run(agent, log, first)
    finally:
        await agent.aclose()
        await first.close()
    log.down = False
    again = SqliteRuntime(tmp_path / "journal.db")  # as another process opens it
    agent = _agent(log, again, None)
    try:
        assert await again.kept_audit_entries(run_id) == kept
        resumed = await agent.resume(run_id)
        assert resumed.status == RunStatus.COMPLETED
        assert await again.kept_audit_entries(run_id) == []
    finally:
        await agent.aclose()
        await again.close()
    _check_complete(reference, log, run_id)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_second_outage_during_the_resume_keeps_the_entries_once(
    tmp_path: Path, kind: str
) -> None:
    reference = await _reference(tmp_path)
    log = CutLog(tmp_path / "audit.jsonl")
    runtime = _journal(kind, tmp_path)
    agent = _agent(log, runtime, "tool")
    try:
        run_id, kept = await _cut_run(agent, log, runtime)
        log.down, log.allow = False, 1  # `crash_recovered` goes in, then the log is cut again
        with pytest.raises(AuditLogUnavailable):
            await agent.resume(run_id)
        assert await runtime.kept_audit_entries(run_id) == kept  # once, not twice
        log.down = False
        resumed = await agent.resume(run_id)
        assert resumed.status == RunStatus.COMPLETED
        assert await runtime.kept_audit_entries(run_id) == []
    finally:
        await agent.aclose()
    _check_complete(reference, log, run_id)


async def test_an_outage_later_in_the_resume_keeps_only_the_new_entries(tmp_path: Path) -> None:
    """The kept entries went in at the resume; the resume is cut off later: what it keeps
    now is only what it made itself, and the next resume completes the trail."""
    reference = await _reference(tmp_path)
    log = CutLog(tmp_path / "audit.jsonl")
    runtime = InMemoryRuntime()
    agent = _agent(log, runtime, "tool")
    try:
        run_id, kept = await _cut_run(agent, log, runtime)
        # `crash_recovered`, the marker and the kept entries, `run_started`: then cut.
        log.down, log.allow = False, 3
        with pytest.raises(AuditLogUnavailable):
            await agent.resume(run_id)
        again = await runtime.kept_audit_entries(run_id)
        assert again and not any(entry in kept for entry in again)
        log.down = False
        assert (await agent.resume(run_id)).status == RunStatus.COMPLETED
    finally:
        await agent.aclose()
    _check_complete(reference, log, run_id)
    markers = [e for e in log.entries() if e["action"] == AuditAction.AUDIT_RESTORED]
    assert [m["payload"]["count"] for m in markers] == [len(kept), len(again)]


class EndCutLog(CutLog):
    """A file log cut while it takes the run's `run_completed` entry, until `down` is
    set False: the run's end is journaled, its last entry is not in the log."""

    def _check_entries(self, actions: Sequence[str]) -> None:
        if "run_completed" in actions and self.allow is None and not self.down:
            self.down = True
        self._check()

    async def record(self, action: str, **fields: Any) -> None:
        self._check_entries([action])
        await FileAuditLog.record(self, action, **fields)

    async def record_many(
        self, entries: Sequence[tuple[str, str, Mapping[str, Any]]], **fields: Any
    ) -> None:
        self._check_entries([action for action, _, _ in entries])
        await FileAuditLog.record_many(self, entries, **fields)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_the_end_of_a_finished_run_an_outage_cut_off_is_written_at_its_resume(
    tmp_path: Path, kind: str
) -> None:
    """The run completed, but the log was down for its `run_completed` entry: the run
    raises, its journal keeps the entry. Resuming the finished run (as the error invites)
    writes it once, behind the marker, and returns the run's result; nothing runs again."""
    reference = await _reference(tmp_path)
    log = EndCutLog(tmp_path / "audit.jsonl")
    runtime = _journal(kind, tmp_path)
    agent = _agent(log, runtime, None)
    try:
        with pytest.raises(AuditLogUnavailable):
            await agent.run("where?", user_id="alice")
        [run] = await runtime.runs()
        assert run.status == RunStatus.COMPLETED
        kept = await runtime.kept_audit_entries(run.run_id)
        assert [action for action, _, _ in kept] == ["run_completed"]
        log.down = False
        log.allow = 10**6  # the log is back for good
        resumed = await agent.resume(run.run_id)
        assert resumed.status == RunStatus.COMPLETED and resumed.output == "In France"
        assert await runtime.kept_audit_entries(run.run_id) == []
        await agent.resume(run.run_id)  # again: nothing more is written
    finally:
        await agent.aclose()
    entries = list(log.entries(run_id=run.run_id))
    assert _trail(entries) == reference  # the whole trail, in order, each entry once
    assert [e["action"] for e in entries[-2:]] == ["audit_restored", "run_completed"]


# ---------------------------------------------------------------------------- the writer


class CountedLog:
    """An audit log without `record_many` that takes `room` entries, then is down."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.written: list[tuple[str, str, dict[str, Any]]] = []

    async def record(
        self, action: str, *, run_id: str, user_id: str | None, actor: str, payload: Any
    ) -> None:
        if len(self.written) >= self.room:
            raise AuditLogUnavailable("counted", "full")
        self.written.append((action, actor, dict(payload)))

    async def close(self) -> None:
        """Nothing to close."""


async def _started(runtime: Any, run_id: str = "r1") -> None:
    await runtime.start_run(RunRecord(run_id, "g", "h", "alice", None))


async def test_a_restore_cut_part_way_keeps_only_what_was_not_written() -> None:
    runtime = InMemoryRuntime()
    await _started(runtime)
    kept = [("a", "n", {"i": 1}), ("b", "n", {"i": 2}), ("c", "n", {"i": 3})]
    await runtime.keep_audit_entries("r1", kept)
    log = CountedLog(room=2)  # the marker and the first kept entry go in
    writer = AuditWriter(log, "r1", "alice")
    with pytest.raises(AuditLogUnavailable):
        await restore_kept(writer, runtime)
    with pytest.raises(AuditLogUnavailable):
        writer.add("d", "n", {"i": 4})  # made after the outage: kept too
    assert writer.unwritten() == [kept[1], kept[2], ("d", "n", {"i": 4})]
    await keep_unwritten(writer, runtime)
    assert await runtime.kept_audit_entries("r1") == [kept[1], kept[2], ("d", "n", {"i": 4})]
    assert [w[0] for w in log.written] == ["audit_restored", "a"]


async def test_a_writer_that_failed_keeps_its_batch_and_what_queued_behind_it() -> None:
    log = CountedLog(room=1)
    writer = AuditWriter(log, "r1", None)
    entries = [(f"e{i}", "n", {"i": i}) for i in range(4)]
    for entry in entries:
        writer.add(*entry)
    with pytest.raises(AuditLogUnavailable):
        await writer.written()
    assert writer.unwritten() == entries[1:]
    assert [w[0] for w in log.written] == ["e0"]


async def test_kept_entries_are_lost_with_a_warning_when_the_journal_is_out_of_reach(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Unreachable(InMemoryRuntime):
        async def keep_audit_entries(self, run_id: str, entries: Any) -> None:
            raise JournalUnavailable("the test's journal", "cut")

    runtime = Unreachable()
    await _started(runtime)
    writer = AuditWriter(CountedLog(room=0), "r1", None)
    writer.add("a", "n", {})
    with pytest.raises(AuditLogUnavailable):
        await writer.written()
    with caplog.at_level(logging.WARNING):
        await keep_unwritten(writer, runtime)  # does not raise
    assert "lost" in caplog.text


async def test_a_journal_without_an_outbox_keeps_nothing() -> None:
    writer = AuditWriter(CountedLog(room=0), "r1", None)
    writer.add("a", "n", {})
    with pytest.raises(AuditLogUnavailable):
        await writer.written()
    await keep_unwritten(writer, object())  # nothing to keep them in: as before
    await restore_kept(writer, object())


async def test_an_unwritten_entry_made_before_a_kept_one_is_kept_before_it() -> None:
    """The journal keeps a run's end (`Kept.ALREADY`); an outage then fails the batch with
    an entry made before it: the outbox is left with both, in the order they were made
    (kept again after, the old copy let go of), for the resume to write in that order."""
    runtime = InMemoryRuntime()
    await _started(runtime)
    end = ("run_completed", "agent", {"status": "cancelled"})
    await runtime.keep_audit_entries("r1", [end])  # as `finish_run` keeps it
    writer = AuditWriter(CountedLog(room=0), "r1", None)
    writer.add("budget_settle", "budget", {"i": 1})
    writer.add(*end, Kept.ALREADY)
    with pytest.raises(AuditLogUnavailable):
        await writer.written()
    await keep_unwritten(writer, runtime)
    assert await runtime.kept_audit_entries("r1") == [("budget_settle", "budget", {"i": 1}), end]


async def test_a_kept_entry_the_log_took_is_let_go_of() -> None:
    runtime = InMemoryRuntime()
    await _started(runtime)
    end = ("run_completed", "agent", {"status": "completed"})
    await runtime.keep_audit_entries("r1", [end])
    log = CountedLog(room=10)
    writer = AuditWriter(log, "r1", None)
    writer.add("a", "n", {})
    writer.add(*end, Kept.ALREADY)
    await writer.written()
    await keep_unwritten(writer, runtime)
    assert await runtime.kept_audit_entries("r1") == []
    assert [w[0] for w in log.written] == ["a", "run_completed"]


async def test_a_writer_whose_lease_was_lost_writes_and_keeps_nothing_more() -> None:
    """Once `fenced_out` says the run's lease is lost, neither what was queued (the batch
    not begun) nor what comes after is written, and nothing is kept or let go of."""
    runtime = InMemoryRuntime()
    await _started(runtime)
    await runtime.keep_audit_entries("r1", [("old", "n", {})])
    lost = [False]
    log = CountedLog(room=10)
    writer = AuditWriter(log, "r1", None, fenced_out=lambda: lost[0])
    writer.add("before", "n", {})
    await writer.written()
    writer.add("queued", "n", {})  # the batch is not begun yet
    writer.add("old", "n", {}, Kept.ALREADY)
    lost[0] = True
    await writer.written()
    writer.add("after", "n", {})
    await writer.written()
    await keep_unwritten(writer, runtime)
    assert [w[0] for w in log.written] == ["before"]
    assert writer.halted and writer.dropped == 3
    assert await runtime.kept_audit_entries("r1") == [("old", "n", {})]  # the new owner's


# ---------------------------------------------------------------------------- journals


async def _keeps_in_order(runtime: Any) -> None:
    await _started(runtime)
    await _started(runtime, "r2")
    assert await runtime.kept_audit_entries("r1") == []
    a, b, c = (("a", "x", {"k": [1, "é\x00"]}), ("b", "y", {}), ("c", "z", {"n": None}))
    await runtime.keep_audit_entries("r1", [a, b])
    await runtime.keep_audit_entries("r2", [c])
    await runtime.keep_audit_entries("r1", [c])
    assert await runtime.kept_audit_entries("r1") == [a, b, c]
    await runtime.drop_audit_entries("r1", 2)
    assert await runtime.kept_audit_entries("r1") == [c]
    assert await runtime.kept_audit_entries("r2") == [c]
    await runtime.drop_audit_entries("r1", 1)
    await runtime.keep_audit_entries("r1", [b])  # numbered on after a drop
    assert await runtime.kept_audit_entries("r1") == [b]
    with pytest.raises(UnknownRun):
        await runtime.keep_audit_entries("nope", [a])
    assert await runtime.kept_audit_entries("nope") == []


async def _fenced(runtime: Any) -> None:
    await _started(runtime, "r3")
    old = await runtime.acquire_lease("r3", "a")
    token = current_fence.set(old)
    try:
        await runtime.keep_audit_entries("r3", [("a", "n", {})])
    finally:
        current_fence.reset(token)
    new = await runtime.acquire_lease("r3", "b", take_from="a")
    assert new.token > old.token
    token = current_fence.set(old)  # the zombie writes on
    try:
        with pytest.raises(LeaseLost):
            await runtime.keep_audit_entries("r3", [("z", "n", {})])
        with pytest.raises(LeaseLost):
            await runtime.drop_audit_entries("r3", 1)
    finally:
        current_fence.reset(token)
    assert await runtime.kept_audit_entries("r3") == [("a", "n", {})]
    token = current_fence.set(new)
    try:
        await runtime.drop_audit_entries("r3", 1)
    finally:
        current_fence.reset(token)
    assert await runtime.kept_audit_entries("r3") == []


async def _finish(runtime: Any, run_id: str, status: RunStatus, fence: Any = None) -> bool:
    """`finish_run` with a `run_completed` entry kept with it; whether the journal kept it."""
    end = EndEntries(run_id, (("run_completed", "agent", {"status": str(status)}),))
    tokens = end_entries.set(end), current_fence.set(fence)
    try:
        await runtime.finish_run(run_id, status, "", None)
    finally:
        end_entries.reset(tokens[0])
        current_fence.reset(tokens[1])
    return end.kept


async def _ends_kept(runtime: Any) -> None:
    """The end's entries are kept with the end, in its transaction: not when the end is
    refused (a lost lease, a run ended already), nor for a run reopened `running`."""
    await _started(runtime, "e1")
    old = await runtime.acquire_lease("e1", "a")
    assert not await _finish(runtime, "e1", RunStatus.RUNNING, old)  # reopened: ends nothing
    assert await runtime.kept_audit_entries("e1") == []
    new = await runtime.acquire_lease("e1", "b", take_from="a")
    with pytest.raises(LeaseLost):
        await _finish(runtime, "e1", RunStatus.COMPLETED, old)  # a zombie's end
    assert (await runtime.load_run("e1")).status == RunStatus.RUNNING
    assert await runtime.kept_audit_entries("e1") == []
    assert await _finish(runtime, "e1", RunStatus.FAILED, new)  # a stop that resumes too
    assert [a for a, _, _ in await runtime.kept_audit_entries("e1")] == ["run_completed"]
    await runtime.drop_audit_entries("e1", 1)
    await runtime.finish_run("e1", RunStatus.RUNNING, "", None)  # resumed
    assert await _finish(runtime, "e1", RunStatus.COMPLETED, new)
    with pytest.raises(RunFinished):
        await _finish(runtime, "e1", RunStatus.COMPLETED, new)
    kept = await runtime.kept_audit_entries("e1")
    assert kept == [("run_completed", "agent", {"status": "completed"})]  # once
    await _started(runtime, "e2")
    await runtime.finish_run("e2", RunStatus.COMPLETED, "", None)  # nothing set: nothing kept
    assert await runtime.kept_audit_entries("e2") == []


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_run_end_keeps_its_entries_in_its_own_transaction(
    tmp_path: Path, kind: str
) -> None:
    runtime = _journal(kind, tmp_path)
    try:
        await _ends_kept(runtime)
    finally:
        await runtime.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_the_outbox_keeps_entries_in_order_and_lets_go_of_the_oldest(
    tmp_path: Path, kind: str
) -> None:
    runtime = _journal(kind, tmp_path)
    try:
        await _keeps_in_order(runtime)
    finally:
        await runtime.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_stale_lease_holder_can_neither_keep_nor_drop(tmp_path: Path, kind: str) -> None:
    runtime = _journal(kind, tmp_path)
    try:
        await _fenced(runtime)
    finally:
        await runtime.close()


@pytest.mark.postgres
async def test_the_postgres_outbox_keeps_in_order_and_is_fenced(pg_schema: str) -> None:
    async with PostgresRuntime(pg.postgres_dsn(), schema=pg_schema) as runtime:
        await _keeps_in_order(runtime)
        await _fenced(runtime)
        await _ends_kept(runtime)
    # A journal made before the outbox (its table gone) gains it when opened.
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(pg.postgres_dsn())
    try:
        await conn.execute(f'DROP TABLE "{pg_schema}".audit_outbox')
    finally:
        await conn.close()
    async with PostgresRuntime(pg.postgres_dsn(), schema=pg_schema) as runtime:
        await runtime.keep_audit_entries("r2", [("d", "n", {})])
        assert await runtime.kept_audit_entries("r2") == [("d", "n", {})]


async def test_a_journal_made_before_the_outbox_gains_it_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    async with SqliteRuntime(path) as runtime:
        await _started(runtime)
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TABLE audit_outbox")
    raw.close()
    async with SqliteRuntime(path) as runtime:
        await runtime.keep_audit_entries("r1", [("a", "n", {"i": 1})])
        assert await runtime.kept_audit_entries("r1") == [("a", "n", {"i": 1})]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_run_keeps_its_end_entry_until_the_log_has_it(tmp_path: Path, kind: str) -> None:
    """When the run's end is journaled its `run_completed` entry is kept with it (a crash
    then leaves it for the resume); once the log has it, nothing is kept."""
    seen: list[list[str]] = []
    base = InMemoryRuntime if kind == "memory" else SqliteRuntime

    class Watched(base):  # type: ignore[misc,valid-type]
        async def finish_run(self, run_id: str, status: Any, reason: str, result: Any) -> None:
            await super().finish_run(run_id, status, reason, result)
            seen.append([a for a, _, _ in await self.kept_audit_entries(run_id)])

    runtime = Watched() if kind == "memory" else Watched(tmp_path / "journal.db")
    log = CutLog(tmp_path / "audit.jsonl")
    agent = _agent(log, runtime, None)
    try:
        result = await agent.run("where?", user_id="alice")
        assert await runtime.kept_audit_entries(result.run_id) == []
    finally:
        await agent.aclose()
    assert seen == [["run_completed"]]
    actions = [e["action"] for e in log.entries(run_id=result.run_id)]
    assert actions[-1] == "run_completed" and "audit_restored" not in actions


async def test_an_ordinary_run_reads_no_outbox(tmp_path: Path) -> None:
    """Nothing new per run: a run that was not cut off never reads the outbox."""
    reads: list[str] = []

    class Watched(InMemoryRuntime):
        async def kept_audit_entries(self, run_id: str) -> list[Any]:
            reads.append(run_id)
            return await super().kept_audit_entries(run_id)

    log = CutLog(tmp_path / "audit.jsonl")
    agent = _agent(log, Watched(), None)
    try:
        result = await agent.run("where?", user_id="alice")
    finally:
        await agent.aclose()
    assert result.status == RunStatus.COMPLETED and reads == []
