"""Cancels, unstarted runs and answers in the worker fleet, against the real Postgres server
(tests/pg.py), each test in a schema of its own; a crashed run comes from a real `loomgraph
worker` SIGKILLed inside a tool (tests/fleet_agent.py).

- A run that never started (queued, or cancelled while queued) is neither resumed nor forked,
  by any agent: the journal has no prompt or first state of it.
- A cancel that lands while a worker recovers a crashed run is not overridden by the recovery.
- A cancel of a fleet run resumed in-process (`runs approve`) stops it at its next effect.
- A second answer while the run's job is queued gets a typed error (409 from the server); one
  given while the job that stopped the run is still being ended is accepted.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

import fleet_agent
import pg
import test_fleet
from loomgraph.agent.checkpoints import RunOfAnotherAgent
from loomgraph.agent.fleet import FleetError, FleetQueue, JobKind, RunJob, fleet_queue
from loomgraph.agent.resuming import RunNotStarted, RunQueued
from loomgraph.agent.submitting import CancelOutcome, RunJobPending, RunNotCancellable
from loomgraph.protocols import EffectStatus, RunStatus
from loomgraph.serve.errors import status_of
from loomgraph.tools.context import ToolContext
from loomgraph.workers.advance import advance
from test_fleet import sql, until

pytestmark = pytest.mark.postgres
pg_schema = pg.pg_schema
env = test_fleet.env


# --------------------------------------------------------------------------- never started


async def test_a_run_that_never_started_is_neither_resumed_nor_forked(
    env: dict[str, str], pg_schema: str
) -> None:
    async with (
        fleet_agent.make(name="a") as a,
        fleet_agent.make(name="b") as b,
        fleet_agent.make() as unnamed,
    ):
        run_id = await a.submit("do the work", user_id="alice")
        # Queued: nothing to fork yet (the prompt is only in its job), and no other agent's.
        with pytest.raises(RunQueued, match=f"run {run_id} .*fork"):
            await a.fork(run_id, at=0)
        for other in (b, unnamed):
            with pytest.raises(RunOfAnotherAgent, match="'a'"):
                await other.resume(run_id)
            with pytest.raises(RunOfAnotherAgent, match="'a'"):
                await other.fork(run_id, at=0)

        assert await a.cancel(run_id, by="ops") == CancelOutcome.CANCELLED
        # Cancelled before a worker took it up: it never started, so nothing goes on from it.
        for go_on in (a.resume, a.retry, lambda r: a.fork(r, at=0)):
            with pytest.raises(RunNotStarted, match=f"run {run_id} never started") as refused:
                await go_on(run_id)
            assert refused.value.run_id == run_id and refused.value.status == RunStatus.CANCELLED
        for other in (b, unnamed):  # the job's agent owns it, though its record names none
            for go_on in (other.resume, other.retry, lambda r, o=other: o.fork(r, at=0)):
                with pytest.raises(RunOfAnotherAgent, match="'a'"):
                    await go_on(run_id)

        record = await a.deps.runtime.load_run(run_id)
        assert record is not None and record.initial is None
        assert (record.status, record.reason) == (RunStatus.CANCELLED, "cancelled by ops")
        assert await a.deps.runtime.transitions(run_id) == []
        assert [r.run_id for r in await a.runs()] == [run_id]  # no fork was journaled
        assert await sql(f"SELECT * FROM {pg_schema}.attempts") == []  # no tool ran
    assert issubclass(RunQueued, RunNotStarted)


# --------------------------------------------------------------------------- recovery vs cancel


async def _crashed_run(
    env: dict[str, str], tmp_path: Path, client: Any, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A run whose worker was SIGKILLed inside its slow tool call: journaled `running`, its
    lease held by a dead process, its job still picked."""
    workers = test_fleet.fleet({**env, "FLEET_SLOW_MS": "20000"}, tmp_path, "--concurrency", "2")
    proc = workers.start()
    try:
        run_id = await client.submit("slow work", user_id="alice")

        async def in_tool() -> bool:
            effects = await client.deps.runtime.effects(run_id)
            return any(e.kind == "tool" and e.status == EffectStatus.PENDING for e in effects)

        await until("the worker is inside a tool call", in_tool, 60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        workers.stop()
    record = await client.deps.runtime.load_run(run_id)
    assert record is not None and record.status == RunStatus.RUNNING
    monkeypatch.setenv("FLEET_SLOW_MS", "50")  # the recovery in this process: quick
    return run_id


def _recovery_job(run_id: str) -> RunJob:
    return RunJob(run_id, JobKind.START, user_id="alice", prompt="slow work")


async def _tools_run_here(pg_schema: str) -> list[Any]:
    rows = await sql(f"SELECT key FROM {pg_schema}.attempts WHERE pid = $1", os.getpid())
    return [r[0] for r in rows]


async def test_a_recovering_worker_never_lets_go_of_the_run_between_its_check_and_resume(
    env: dict[str, str], tmp_path: Path, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fleet_agent.make() as client, fleet_agent.make() as worker:
        run_id = await _crashed_run(env, tmp_path, client, monkeypatch)
        runtime: Any = worker.deps.runtime
        release = runtime.release_lease
        seen: list[Any] = []

        async def release_then_cancel(run: str, owner: str) -> Any:
            # The probe's window: right after the worker gives the run's lease back, the
            # cancel finds nobody holding it.
            done = await release(run, owner)
            if not seen:
                seen.append((await client.deps.runtime.load_run(run_id)).status)
                try:
                    seen.append(await client.cancel(run_id, by="ops"))
                except RunNotCancellable as err:
                    seen.append(err)
            return done

        runtime.release_lease = release_then_cancel
        await advance(worker, fleet_queue(runtime), _recovery_job(run_id))
        record = await client.deps.runtime.load_run(run_id)
        assert record is not None
        # The first time the worker let go, the run had stopped: no window for a cancel.
        assert seen[0] == RunStatus.COMPLETED, seen
        assert isinstance(seen[1], RunNotCancellable) and record.status == RunStatus.COMPLETED


async def test_a_cancel_during_the_recovery_check_stops_the_recovered_run(
    env: dict[str, str], tmp_path: Path, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fleet_agent.make() as client, fleet_agent.make() as worker:
        run_id = await _crashed_run(env, tmp_path, client, monkeypatch)
        job_of = FleetQueue.job_of
        answered: list[CancelOutcome] = []

        async def check_then_cancel(self: FleetQueue, run: str) -> Any:
            found = await job_of(self, run)  # the worker's cancel check, under its lease
            if not answered:
                answered.append(await client.cancel(run_id, by="ops"))
            return found

        monkeypatch.setattr(FleetQueue, "job_of", check_then_cancel)
        await advance(worker, fleet_queue(worker.deps.runtime), _recovery_job(run_id))
        record = await client.deps.runtime.load_run(run_id)
        assert answered == [CancelOutcome.STOPPING]
        assert record is not None
        assert (record.status, record.reason) == (RunStatus.CANCELLED, "cancelled by ops")
        assert await _tools_run_here(pg_schema) == []  # the recovery ran no tool


# --------------------------------------------------------------------------- in-process resume


async def test_a_fleet_run_resumed_in_process_stops_when_cancelled(
    env: dict[str, str], tmp_path: Path, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_ASK", "1")  # the third call waits for an approval
    inside, go = asyncio.Event(), asyncio.Event()

    async def work(item: str, context: ToolContext) -> str:
        """Do one unit of work for the user (writes the side-effect ledger)."""
        inside.set()
        await go.wait()
        return await fleet_agent.work(item, context)

    workers = test_fleet.fleet({**env, "FLEET_ASK": "1"}, tmp_path, "--concurrency", "2")
    workers.start()
    try:
        async with fleet_agent.make() as client, fleet_agent.make(tools=[work]) as approver:
            run_id = await client.submit("work", user_id="alice")
            waiting = await client.wait(run_id, timeout=60)
            assert waiting.status == RunStatus.AWAITING_APPROVAL
            # `loomgraph runs approve`: the approved call runs in this process.
            resumed = asyncio.create_task(approver.resume(run_id, approve=True))
            await asyncio.wait_for(inside.wait(), 30)
            assert await client.cancel(run_id, by="ops") == CancelOutcome.STOPPING
            go.set()
            result = await asyncio.wait_for(resumed, 60)
            assert (result.status, result.reason) == (RunStatus.CANCELLED, "cancelled by ops")
            assert (await client.wait(run_id, timeout=30)).status == RunStatus.CANCELLED
            # The approved call finished (its effect has its outcome); no model call came after.
            effects = await client.deps.runtime.effects(run_id)
            assert [e.status for e in effects if e.kind == "tool"][-1] == EffectStatus.DONE
            assert len([e for e in effects if e.kind == "model"]) == 2
    finally:
        workers.stop()


# --------------------------------------------------------------------------- answers


async def _waiting_run(a: Any) -> str:
    waiting = await a.run("work", user_id="alice")
    assert waiting.status == RunStatus.AWAITING_APPROVAL
    return str(waiting.run_id)


async def _jobs(schema: str, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    rows = await sql(f"SELECT status, payload FROM {schema}.pgqueuer ORDER BY id")
    jobs = [(str(r[0]), RunJob.decode(r[1])) for r in rows]
    return [(status, job.answer) for status, job in jobs if job.run_id == run_id]


async def test_a_second_answer_while_the_first_is_queued_is_a_typed_conflict(
    env: dict[str, str], pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_ASK", "1")
    async with fleet_agent.make() as a:
        run_id = await _waiting_run(a)
        await a.submit_resume(run_id, approve=True)
        with pytest.raises(RunJobPending, match=f"run {run_id} .*queued") as refused:
            await a.submit_resume(run_id, approve=False)
        assert isinstance(refused.value, FleetError) and refused.value.run_id == run_id
        assert status_of(refused.value) == (409, "run_conflict")  # the server's answer
        # An answer by hand (`runs deny`, a resume in process) is refused alike: it used to
        # go on with the run, and the queued answer its approver was told of was dropped.
        with pytest.raises(RunJobPending, match=f"run {run_id} .*queued"):
            await a.resume(run_id, approve=False)
        record = await a.deps.runtime.load_run(run_id)
        assert record is not None and record.status == RunStatus.AWAITING_APPROVAL
        [(status, answer)] = await _jobs(pg_schema, run_id)  # the first answer stands
        assert status == "queued" and answer["approve"]["allow"] is True


async def _picked_job(a: Any, schema: str, run_id: str) -> int:
    """A job of the run that a worker holds (picked): the one that stopped the run, not ended
    yet."""
    fleet = fleet_queue(a.deps.runtime)
    await fleet.install()
    job = RunJob(run_id, JobKind.START, user_id="alice", prompt="work")
    async with a.deps.runtime.transaction() as con:
        job_id = await fleet.enqueue(con, job, queue="runs", priority=0, delay=None)
        await con.execute(f"UPDATE {schema}.pgqueuer SET status = 'picked' WHERE id = $1", job_id)
    return job_id


async def test_an_answer_given_while_the_stopping_job_ends_is_accepted(
    env: dict[str, str], pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_ASK", "1")
    async with fleet_agent.make() as a:
        run_id = await _waiting_run(a)
        job_id = await _picked_job(a, pg_schema, run_id)
        enqueue = FleetQueue.enqueue
        refused = asyncio.Event()

        async def watched(self: FleetQueue, con: Any, job: RunJob, **options: Any) -> int:
            try:
                return await enqueue(self, con, job, **options)
            except Exception:
                refused.set()  # the picked job is still there: the answer waits for it
                raise

        monkeypatch.setattr(FleetQueue, "enqueue", watched)
        answering = asyncio.create_task(a.submit_resume(run_id, approve=True))
        await asyncio.wait_for(refused.wait(), 10)
        await sql(f"DELETE FROM {pg_schema}.pgqueuer WHERE id = $1", job_id)  # the job ends
        await asyncio.wait_for(answering, 10)
        [(status, answer)] = await _jobs(pg_schema, run_id)
        assert status == "queued" and answer["approve"]["allow"] is True


async def test_an_answer_behind_a_job_that_does_not_end_is_a_typed_conflict(
    env: dict[str, str], pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loomgraph.agent import submitting

    monkeypatch.setenv("FLEET_ASK", "1")
    monkeypatch.setattr(submitting, "ANSWER_WAIT_SECONDS", 0.3, raising=False)
    async with fleet_agent.make() as a:
        run_id = await _waiting_run(a)
        await _picked_job(a, pg_schema, run_id)
        with pytest.raises(RunJobPending, match=f"run {run_id} .*worker") as refused:
            await a.submit_resume(run_id, approve=True)
        assert status_of(refused.value) == (409, "run_conflict")
        [(status, answer)] = await _jobs(pg_schema, run_id)
        assert status == "picked" and answer == {}


# ------------------------------------------------------------------ a waiting run cancelled


async def test_a_waiting_run_cancelled_is_given_back_cancelled_by_wait_and_its_events(
    env: dict[str, str], pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its stored result used to stay the waiting one: `wait` said `awaiting_approval`, with
    # the call still pending, while the journal said `cancelled`.
    monkeypatch.setenv("FLEET_ASK", "1")
    async with fleet_agent.make() as a:
        waiting = await a.run("work", user_id="alice")
        assert waiting.status == RunStatus.AWAITING_APPROVAL and waiting.pending is not None
        assert await a.cancel(waiting.run_id, by="ops") == CancelOutcome.CANCELLED
        result = await a.wait(waiting.run_id, timeout=10)
        assert (result.status, result.reason) == (RunStatus.CANCELLED, "cancelled by ops")
        assert result.pending is None
        assert result.usage == waiting.usage and result.output == waiting.output  # kept
        [ended] = [
            i.event async for i in a.events(waiting.run_id) if i.event.kind == "run_completed"
        ]
        assert ended.payload["status"] == "cancelled", ended.payload
        assert ended.payload["result"]["status"] == "cancelled", ended.payload


async def test_runs_deny_while_an_answer_is_queued_is_busy_and_answers_nothing(
    env: dict[str, str], pg_schema: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    # The command went on with the run, and the answer queued before it was dropped; now it
    # is refused as a busy run is (75, try again later), and the queued answer stands.
    from loomgraph.cli.main import main

    monkeypatch.setenv("FLEET_ASK", "1")
    async with fleet_agent.make() as a:
        waiting = await a.run("work", user_id="alice")
        assert waiting.pending is not None and waiting.pending.call is not None
        await a.submit_resume(waiting.run_id, approve=True)
        call_id, key = waiting.pending.call["id"], waiting.pending.key
        dsn = f"{pg.postgres_dsn()}?schema={pg_schema}"
        command = ["runs", "deny", waiting.run_id, call_id, "--request", key]
        options = ["--tools", "fleet_agent:work", "--runtime", dsn]
        code = await asyncio.to_thread(main, [*command, *options])
        assert code == 75, capsys.readouterr()
        assert "queued" in capsys.readouterr().err
        record = await a.deps.runtime.load_run(waiting.run_id)
        assert record is not None and record.status == RunStatus.AWAITING_APPROVAL
        [(status, answer)] = await _jobs(pg_schema, waiting.run_id)
        assert status == "queued" and answer["approve"]["allow"] is True
