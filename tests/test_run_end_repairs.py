"""The ends of a run that no session runs, under real crashes, and a caller's cancel at a
run's end (each test failed before its fix).

- A resume that gives a run up (`dead_letter`) keeps its entry with the end: a SIGKILL
  between the two leaves it kept, and whatever looks at the dead letter next (a resume, which
  refuses it; a retry; a fleet worker) writes it.
- A fleet worker that picks the job of a run it finds ended (its last worker died right
  after the end) writes what the end kept, under the lease it holds.
- A fleet worker that cancels a crashed run (a cancel asked while no worker ran it) audits
  the end (`run_completed`, cancelled) as a cancelled run's session does.
- A caller's cancel that lands after the graph ran (memory keeping the episode, the end
  being journaled) leaves the run ended as it ended, not `running`.

Worker: tests/run_end_crash_worker.py (SIGKILL right after `finish_run` took an end).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pg
import run_end_crash_worker as W
from loomgraph import Agent
from loomgraph.agent.fleet import fleet_queue
from loomgraph.agent.recovery import RunDeadLettered
from loomgraph.memory import InMemoryMemory
from loomgraph.models import ScriptedModel
from loomgraph.observability import FileAuditLog
from loomgraph.protocols import Episode, RunStatus
from loomgraph.runtime import InMemoryRuntime
from loomgraph.workers.advance import Advanced, advance
from test_crash_matrix import Journal, Worker

WORKER = str(Path(__file__).with_name("run_end_crash_worker.py"))
pg_schema = pg.pg_schema


def run_worker(where: Path, journal: Journal, mode: str, *args: str) -> Worker:
    """Run the worker to its end (its own SIGKILL included)."""
    done = subprocess.run(
        [sys.executable, WORKER, mode, str(where), *journal.args(), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return Worker(done.returncode, lines, done.stderr)


def killed(worker: Worker, point: str) -> None:
    """The worker SIGKILLed itself at `point`."""
    assert worker.returncode == -signal.SIGKILL, worker.stderr
    assert worker.last("crash")["crash"] == point, worker.lines


def trail(where: Path, run_id: str) -> list[tuple[str, Any]]:
    """The run's audit entries: (action, the status its payload names)."""
    log = FileAuditLog(where / "audit.jsonl", unsigned=True)
    return [(e["action"], e["payload"].get("status")) for e in log.entries(run_id=run_id)]


async def kept(journal: Journal, run_id: str) -> list[Any]:
    """The audit entries the journal still keeps for the run."""
    runtime: Any = journal.open()
    try:
        return list(await runtime.kept_audit_entries(run_id))
    finally:
        await runtime.close()


# --------------------------------------------------------------------------- dead letters


@pytest.mark.parametrize("then", ["resume", "retry"])
async def test_a_dead_letter_killed_before_its_entry_was_written_is_audited_afterwards(
    tmp_path: Path, then: str
) -> None:
    """A run fails and its process dies right after its end was journaled (its
    `run_completed` kept); a resume gives it up (`max_recoveries` 0) and its process dies
    right after `finish_run` journaled `dead_letter`. `begin_recovery` wrote the `dead_letter`
    entry straight to the log after the end, so the crash lost it for good, and nothing
    wrote the failed end's kept entry either. Now the resume writes what the journal kept
    first, then keeps the dead letter's entry with its end; the next look at the run (a
    resume, refused; or a retry) writes it, once."""
    journal = Journal(f"sqlite:{tmp_path / 'journal.db'}")
    (tmp_path / "broken").touch()
    first = run_worker(tmp_path, journal, "run", "--die-after", "failed")
    killed(first, "after_failed")
    run_id = first.lines[0]["run_id"]
    gave_up = run_worker(
        tmp_path, journal, "resume", "--run-id", run_id, "--max-recoveries", "0",
        "--die-after", "dead_letter",
    )  # fmt: skip
    killed(gave_up, "after_dead_letter")
    # The failed end, kept by the first crash, was written before the run was given up.
    assert trail(tmp_path, run_id)[-2:] == [("audit_restored", None), ("run_completed", "failed")]

    (tmp_path / "broken").unlink()
    agent = W.make_agent(tmp_path, journal.open())
    try:
        if then == "resume":
            with pytest.raises(RunDeadLettered):
                await agent.resume(run_id)
        else:
            assert (await agent.retry(run_id)).status == RunStatus.COMPLETED
    finally:
        await agent.aclose()
        await agent.deps.runtime.close()  # type: ignore[attr-defined]
    actions = trail(tmp_path, run_id)
    assert actions.count(("dead_letter", "failed")) == 1, actions
    assert actions.count(("run_completed", "failed")) == 1, actions
    if then == "retry":  # the dead letter's end, then the retry's own trail
        assert actions.index(("dead_letter", "failed")) < actions.index(("run_started", None), 1)
        assert actions[-1] == ("run_completed", "completed")
    assert await kept(journal, run_id) == []


async def test_a_dead_letter_leaves_nothing_kept(tmp_path: Path) -> None:
    """Uninterrupted, the dead letter's entry is written and let go of: nothing stays kept,
    and a later refused resume writes nothing more."""
    journal = Journal(f"sqlite:{tmp_path / 'journal.db'}")
    (tmp_path / "broken").touch()
    agent = W.make_agent(tmp_path, journal.open(), max_recoveries=0)
    try:
        failed = await agent.run(W.PROMPT, user_id=W.USER)
        assert failed.status == RunStatus.FAILED
        given_up = await agent.resume(failed.run_id)
        assert given_up.status == RunStatus.DEAD_LETTER
        with pytest.raises(RunDeadLettered):
            await agent.resume(failed.run_id)
    finally:
        await agent.aclose()
        await agent.deps.runtime.close()  # type: ignore[attr-defined]
    actions = trail(tmp_path, failed.run_id)
    assert actions[-2:] == [("run_completed", "failed"), ("dead_letter", "failed")], actions
    assert await kept(journal, failed.run_id) == []


# --------------------------------------------------------------------------- the fleet


@pytest.fixture
def fleet_journal(pg_schema: str) -> Journal:
    """The fleet's Postgres journal, in the test's schema."""
    return Journal(pg.postgres_dsn(), pg_schema)


async def _crashed_in_a_step(where: Path, journal: Journal, agent: Agent) -> str:
    """A submitted run whose worker was SIGKILLed inside its tool call: `running`."""
    run_id = await agent.submit(W.PROMPT, user_id=W.USER)
    (where / "poison").touch()
    killed(run_worker(where, journal, "advance", "--run-id", run_id), "poison")
    (where / "poison").unlink()
    return run_id


async def _cancel_asked_while_held(agent: Agent, run_id: str) -> None:
    """A cancel asked while the run's worker still held it (`agent.cancel` answered
    STOPPING: it records the request and notifies the worker), which died before its next
    effect boundary heard it."""
    assert await fleet_queue(agent.deps.runtime).request_cancel(run_id, "ops", running=True)


@pytest.mark.postgres
@pytest.mark.parametrize("ended", ["completed", "cancelled", "dead_letter"])
async def test_a_fleet_job_picked_again_after_a_crash_at_the_end_writes_the_end(
    tmp_path: Path, fleet_journal: Journal, ended: str
) -> None:
    """A fleet worker ends a run (completes it; cancels it, asked while no worker ran it;
    gives it up) and dies right after its journal took the end, the end's entry kept. The
    job is picked again (its worker died): the next worker finds the run ended and left
    the entry kept for ever (`advance` returned NOTHING; nobody resumes a finished fleet
    run). Now it writes it, under the lease it holds, once."""
    agent = W.make_agent(tmp_path, fleet_journal.open())
    try:
        if ended == "completed":
            run_id = await agent.submit(W.PROMPT, user_id=W.USER)
            options: tuple[str, ...] = ()
        else:
            run_id = await _crashed_in_a_step(tmp_path, fleet_journal, agent)
            options = ("--max-recoveries", "0")
            if ended == "cancelled":
                await _cancel_asked_while_held(agent, run_id)
        first = run_worker(
            tmp_path, fleet_journal, "advance", "--run-id", run_id, "--die-after", ended, *options
        )
        killed(first, f"after_{ended}")
        assert await kept(fleet_journal, run_id) != []
        again = await advance(agent, fleet_queue(agent.deps.runtime), W.start_job(run_id))
        assert again == Advanced.NOTHING
        record = await agent.deps.runtime.load_run(run_id)
    finally:
        await agent.aclose()
        await agent.deps.runtime.close()  # type: ignore[attr-defined]
    assert record is not None and record.status == ended
    # (A dead letter's entry names the status the run was given up in.)
    end = ("dead_letter", "running") if ended == "dead_letter" else ("run_completed", ended)
    actions = trail(tmp_path, run_id)
    assert actions.count(end) == 1 and actions[-2:] == [("audit_restored", None), end], actions
    assert await kept(fleet_journal, run_id) == []


@pytest.mark.postgres
async def test_a_fleet_worker_that_cancels_a_crashed_run_audits_its_end(
    tmp_path: Path, fleet_journal: Journal
) -> None:
    """A run's worker dies inside a tool call, a cancel asked while it still held the run
    (STOPPING) unheard. The worker that picks the job finds the cancel
    request and journals the run `cancelled`, with `finish_run` alone: the run's trail,
    which began `run_started`, had no end, unlike every other cancelled run's."""
    agent = W.make_agent(tmp_path, fleet_journal.open())
    try:
        run_id = await _crashed_in_a_step(tmp_path, fleet_journal, agent)
        await _cancel_asked_while_held(agent, run_id)
        done = await advance(agent, fleet_queue(agent.deps.runtime), W.start_job(run_id))
        assert done == Advanced.CANCELLED
    finally:
        await agent.aclose()
        await agent.deps.runtime.close()  # type: ignore[attr-defined]
    entries = list(FileAuditLog(tmp_path / "audit.jsonl", unsigned=True).entries(run_id=run_id))
    assert entries[0]["action"] == "run_started"
    assert entries[-1]["action"] == "run_completed", [e["action"] for e in entries]
    assert entries[-1]["payload"]["status"] == "cancelled"
    assert entries[-1]["payload"]["reason"] == "cancelled by ops"
    assert await kept(fleet_journal, run_id) == []


# --------------------------------------------------------------------------- a caller's cancel


class _Held:
    """A step of the run's end that waits until the test lets it go on."""

    def __init__(self) -> None:
        self.entered, self.go = asyncio.Event(), asyncio.Event()

    async def hold(self) -> None:
        self.entered.set()
        await self.go.wait()


@pytest.mark.parametrize("where", ["remember", "finish_run"])
async def test_a_cancel_after_the_graph_ran_leaves_the_run_ended_as_it_ended(
    tmp_path: Path, where: str
) -> None:
    """The graph has answered; while memory keeps the episode (or the journal takes the
    end), the caller cancels (a timeout around `agent.run`). The cancel cut the end off: the
    run stayed `running` in the journal, its episode and its `run_completed` missing, though
    its answer was in hand. Now the end goes on to be journaled as it ended (`completed`,
    its episode kept, its entry written) and the caller gets its cancellation."""
    held = _Held()

    class HeldMemory(InMemoryMemory):
        async def remember(self, episode: Episode) -> bool:
            if where == "remember":
                await held.hold()
            return await super().remember(episode)

    class HeldRuntime(InMemoryRuntime):
        async def finish_run(self, *args: Any, **kwargs: Any) -> None:
            if where == "finish_run":
                await held.hold()
            await super().finish_run(*args, **kwargs)

    memory, runtime = HeldMemory(), HeldRuntime()
    agent = Agent(
        "You answer.",
        model=ScriptedModel(["Paris"]),
        memory=memory,
        runtime=runtime,
        audit_log=FileAuditLog(tmp_path / "audit.jsonl", unsigned=True),
    )
    try:
        task = asyncio.create_task(agent.run("capital of France?", user_id="alice"))
        await asyncio.wait_for(held.entered.wait(), 60)
        task.cancel()
        held.go.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        [record] = await runtime.runs()
        episodes = await memory.episodes("alice")
    finally:
        await agent.aclose()
    assert (record.status, record.result and record.result["output"]) == ("completed", "Paris")
    assert [e.run_id for e in episodes] == [record.run_id]
    assert trail(tmp_path, record.run_id)[-1] == ("run_completed", "completed")
    assert await runtime.kept_audit_entries(record.run_id) == []
