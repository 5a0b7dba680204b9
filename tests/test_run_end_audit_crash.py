"""The audit trail of a run's end under real faults: a SIGKILL right after the end is
journaled, a zombie worker after another finished the run (found by a probe; each test
failed before its fix). Worker: tests/durable_probe_worker.py. And in this process: a zombie
the journal refuses before its lease renewal notices, a crash right after a failed end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from durable_support import (
    audit_actions,
    crashed_at,
    refused_in_the_end,
    run_worker,
    taken_over,
)
from loomgraph import Agent
from loomgraph.governance import BudgetConfig, StandardBudget
from loomgraph.models import ScriptedModel
from loomgraph.observability import FileAuditLog
from loomgraph.protocols import RunStatus
from loomgraph.runtime import InMemoryRuntime
from loomgraph.runtime.errors import LeaseLost
from loomgraph.runtime.sqlite import SqliteRuntime

SCRIPT: list[Any] = [{"tool_calls": [{"tool": "lookup", "args": {"city": "Paris"}}]}, "France"]
ANSWER = "Paris is in France."


async def test_a_run_killed_right_after_its_end_was_journaled_audits_its_completion_on_resume(
    tmp_path: Path,
) -> None:
    """A governed run completes; its process is SIGKILLed right after `finish_run` journaled
    it `completed`, before its `run_completed` audit entry was written. The user resumes the
    run, as the docs say to after a crash: it returns the completed result, but the audit
    log never gets the run's `run_completed` (an uninterrupted run's trail ends with it).
    The entry is made only after `finish_run` (agent/session.py `_drive`) and is not kept
    anywhere first; `restore_ended` only writes entries an audit *outage* kept in the
    outbox, so a crash there leaves the audit trail of a completed run without its end."""
    reference, crashed = tmp_path / "ref", tmp_path / "crash"
    reference.mkdir()
    crashed.mkdir()
    code, lines, err = run_worker(reference, "run", "none")
    assert code == 0, err
    uninterrupted = audit_actions(reference, lines[0]["run_id"])
    assert uninterrupted[-1] == "run_completed"

    run_id = crashed_at(crashed, "after_finish")
    code, lines, err = run_worker(crashed, "resume", run_id)
    assert code == 0, err
    assert lines[-1]["result"]["status"] == "completed"
    trail = audit_actions(crashed, run_id)
    assert "run_completed" in trail, f"the completed run's audit trail has no end: {trail}"


async def test_a_zombie_worker_writes_nothing_to_the_audit_log_of_a_run_another_finished(
    tmp_path: Path,
) -> None:
    """Worker A holds a tool call of a budgeted, audited run and is SIGSTOPped past its
    lease; worker B takes the run over and completes it (its trail ends `run_completed`).
    A is continued: it meets LeaseLost and changes nothing in the journal or the ledger, as
    promised, but its way out appends entries to the run's audit log after B's
    `run_completed` (the settlement of its cut-off tool hold, `budget_settle`): an auditor
    reads budget activity of the run after its end, from a worker that no longer owned it.
    `ToolGate.call` settles (and audits) the hold on any exception, and the session's
    `_opened` writes the queued entries (`written_quietly`) with no lease check; the audit
    log is not fenced."""
    with taken_over(tmp_path, "hold", "holding") as (a, run_id):
        finished = audit_actions(tmp_path, run_id)
        assert finished[-1] == "run_completed"
    refused_in_the_end(a, release=False)
    after = audit_actions(tmp_path, run_id)
    assert after == finished, f"the zombie wrote to the audit log: {after[len(finished) :]}"


class _Crash(Exception):
    """The process dies here (in this process: the run stops, its journal as it is)."""


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_zombie_refused_by_the_journal_audits_nothing_on_its_way_out(
    tmp_path: Path, kind: str
) -> None:
    """While worker A's tool call runs, worker B takes the run's lease over. The tool
    returns before A's lease renewal notices: the journal refuses the call's outcome
    (`LeaseLost`), and on its way out the tool gate settles the call's hold, whose
    `budget_settle` entry went to the log (the writer learned of the lost lease only when
    the error reached the session, after the entry was written)."""
    runtime: Any = InMemoryRuntime() if kind == "memory" else SqliteRuntime(tmp_path / "j.db")

    async def lookup(city: str, idempotency_key: str) -> str:
        """Find the country of a city (meanwhile another worker takes the run over)."""
        run_id = idempotency_key.split(":")[0]
        held = await runtime.lease(run_id)
        await runtime.acquire_lease(run_id, "worker-b", take_from=held.owner)
        return "France"

    log = FileAuditLog(tmp_path / "audit.jsonl", unsigned=True)
    agent = Agent(
        "geo",
        model=ScriptedModel(SCRIPT),
        tools=[lookup],
        runtime=runtime,
        budget=StandardBudget(BudgetConfig(tool_calls=100)),
        audit_log=log,
    )
    try:
        with pytest.raises(LeaseLost):
            await agent.run("where?", user_id="alice")
        [run] = await runtime.runs()
        assert await runtime.kept_audit_entries(run.run_id) == []  # nor kept
    finally:
        await agent.aclose()
        await runtime.close()
    actions = [e["action"] for e in log.entries(run_id=run.run_id)]
    assert actions[-1] == "tool_request", f"the zombie audited on its way out: {actions}"


async def test_a_run_killed_right_after_it_failed_audits_that_end_before_its_resume(
    tmp_path: Path,
) -> None:
    """A run fails (its model errs) and its process dies right after `finish_run`
    journaled it `failed`, before its `run_completed` entry was written. The resume goes on
    with the failed run: its trail says the first attempt ended (`run_completed`, failed)
    before the resume's `run_started`, as an uninterrupted failed-then-resumed run's does."""
    broken = [True]

    def script(request: Any) -> Any:
        if broken[0]:
            raise RuntimeError("the model is down")
        return ANSWER

    class Dying(SqliteRuntime):
        async def finish_run(
            self, run_id: str, status: RunStatus, reason: str, result: dict[str, Any] | None
        ) -> None:
            await super().finish_run(run_id, status, reason, result)
            if status == RunStatus.FAILED:
                raise _Crash(run_id)

    def agent_on(runtime: SqliteRuntime) -> Agent:
        return Agent(
            "geo",
            model=ScriptedModel(script),
            runtime=runtime,
            audit_log=FileAuditLog(tmp_path / "audit.jsonl", unsigned=True),
        )

    first = agent_on(Dying(tmp_path / "journal.db"))
    try:
        with pytest.raises(_Crash) as died:
            await first.run("Where is Paris?", user_id="alice")
    finally:
        await first.aclose()
    run_id = str(died.value)
    broken[0] = False
    again = agent_on(SqliteRuntime(tmp_path / "journal.db"))  # as the next process
    try:
        assert (await again.resume(run_id)).status == RunStatus.COMPLETED
    finally:
        await again.aclose()
    entries = list(FileAuditLog(tmp_path / "audit.jsonl", unsigned=True).entries(run_id=run_id))
    trail = [(e["action"], e["payload"].get("status")) for e in entries]
    ended = trail.index(("run_completed", "failed")) if ("run_completed", "failed") in trail else -1
    assert ended >= 0, f"the failed attempt's end is not in the trail: {trail}"
    assert trail[ended + 1][0] == "run_started", trail
    assert trail[-1] == ("run_completed", "completed")
