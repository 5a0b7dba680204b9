"""A run's audit entries written behind it (`engine/audit_writer.py`): a caller that cancels
the run more than once still gets every entry in the log before the run ends, and a file
log that cannot be written is `AuditLogUnavailable` (the run stays to be resumed)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.errors import ServiceUnavailable
from loomgraph.governance import BudgetConfig, Caps, StandardBudget
from loomgraph.models import ScriptedModel
from loomgraph.observability import AuditLogUnavailable, FileAuditLog
from loomgraph.protocols import RunStatus
from loomgraph.runtime.sqlite import SqliteRuntime

SCRIPT: list[Any] = [{"tool_calls": [{"tool": "lookup", "args": {"city": "Paris"}}]}, "France"]


class GatedLog(FileAuditLog):
    """A file log whose appends wait at a gate the test opens and closes."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, unsigned=True)
        self.gate = asyncio.Event()
        self.gate.set()

    async def record(self, action: str, **fields: Any) -> None:
        await self.gate.wait()
        await super().record(action, **fields)

    async def record_many(
        self, entries: Sequence[tuple[str, str, Mapping[str, Any]]], **fields: Any
    ) -> None:
        await self.gate.wait()
        await super().record_many(entries, **fields)


async def test_a_run_cancelled_again_and_again_ends_with_its_entries_in_the_log(
    tmp_path: Path,
) -> None:
    inside = asyncio.Event()

    async def lookup(city: str) -> str:
        """Never answers."""
        inside.set()
        await asyncio.Event().wait()
        return city

    log = GatedLog(tmp_path / "audit.jsonl")
    agent = Agent(
        "geo",
        model=ScriptedModel(SCRIPT),
        tools=[lookup],
        runtime=SqliteRuntime(tmp_path / "journal.db"),
        audit_log=log,
    )
    try:
        task = asyncio.create_task(agent.run("where?", user_id="alice"))
        await inside.wait()
        log.gate.clear()  # the entries of the cancel cannot be written for now
        for _ in range(500):  # a caller cancelling on every turn of the loop
            task.cancel()
            await asyncio.sleep(0)
            assert not task.done(), "the run ended with its last entries not in the log"
        log.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        actions = [e["action"] for e in log.entries()]
        assert actions[-1] == "run_completed" and actions.count("run_completed") == 1
        [run] = await agent.runs()
        assert run.status == RunStatus.CANCELLED
    finally:
        await agent.aclose()
    assert log.verify().ok


async def test_a_file_log_that_cannot_be_written_is_unavailable_and_the_run_resumes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    moved = tmp_path / "audit.moved"

    def lookup(city: str) -> str:
        """Look a city up (meanwhile the log's path becomes a directory)."""
        if not moved.exists():
            os.rename(path, moved)
            os.mkdir(path)
        return "France"

    log = FileAuditLog(path, unsigned=True)
    runtime = SqliteRuntime(tmp_path / "journal.db")
    agent = Agent(
        "geo", model=ScriptedModel(SCRIPT), tools=[lookup], runtime=runtime, audit_log=log
    )
    try:
        with pytest.raises(AuditLogUnavailable, match=str(path)) as raised:
            await agent.run("where?", user_id="alice")
        assert isinstance(raised.value, ServiceUnavailable)
        assert "IsADirectoryError" in str(raised.value)
        [run] = await runtime.runs()
        assert run.status == RunStatus.RUNNING  # cut off, not failed
        os.rmdir(path)
        os.rename(moved, path)  # the log is back
        resumed = await agent.resume(run.run_id)
        assert resumed.status == RunStatus.COMPLETED and resumed.output == "France"
    finally:
        await agent.aclose()
    assert log.verify().ok
    assert [e["action"] for e in log.entries()][-1] == "run_completed"


def test_an_append_to_a_file_that_cannot_be_written_names_it(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "audit.jsonl"
    log = FileAuditLog(tmp_path / "audit.jsonl", unsigned=True)
    log._path = path  # the directory went away after the log was made
    with pytest.raises(AuditLogUnavailable, match="no-such-dir"):
        log.append("t", run_id="r", user_id=None, actor="a", payload={})


class BatchCountingLog(FileAuditLog):
    """A file log that keeps the actions of each append it is asked for, in order."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, unsigned=True)
        self.batches: list[list[str]] = []

    async def record(self, action: str, **fields: Any) -> None:
        self.batches.append([action])
        await super().record(action, **fields)

    async def record_many(
        self, entries: Sequence[tuple[str, str, Mapping[str, Any]]], **fields: Any
    ) -> None:
        self.batches.append([action for action, _, _ in entries])
        await super().record_many(entries, **fields)


async def test_the_entries_made_between_two_effects_go_in_one_append(tmp_path: Path) -> None:
    """One append (one fsync) for what a run made since its last effect began, made when the
    next effect waits for it: not an append started at each entry of an idle writer (a run
    whose budget reserves a call in a durable ledger commit, on a worker thread, let the
    entries before the reservation go in an append of their own)."""
    in_log_at_call: list[list[str]] = []
    log = BatchCountingLog(tmp_path / "audit.jsonl")

    async def lookup(city: str) -> str:
        """Looks a city up."""
        in_log_at_call.append([e["action"] for e in log.entries()])
        return city

    turns = [{"tool_calls": [{"tool": "lookup", "args": {"city": f"c{n}"}}]} for n in range(4)]
    agent = Agent(
        "geo",
        model=ScriptedModel([*turns, "done"]),
        tools=[lookup],
        runtime=SqliteRuntime(tmp_path / "journal.db"),
        audit_log=log,
        budget=StandardBudget(BudgetConfig(per_user=Caps(tool_calls=100, model_calls=100))),
    )
    try:
        result = await agent.run("where?", user_id="alice")
    finally:
        await agent.aclose()
    assert result.status == RunStatus.COMPLETED
    effects = 5 + 4  # model calls, tool calls
    # One append before each effect (the first with the run's start), the run's last
    # entries, and its end (kept in the journal with it, then written).
    assert len(log.batches) == effects + 2, log.batches
    # Each call still found its request in the log before it ran.
    assert [entries.count("tool_request") for entries in in_log_at_call] == [1, 2, 3, 4]
    assert sum(len(b) for b in log.batches) == len(list(log.entries()))
    assert log.verify().ok
