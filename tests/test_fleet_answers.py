"""Fleet answers and cancels keep their bindings: an approval submitted for one request stays
bound to it on its way through the queue, and only the agent a run belongs to cancels it.
Against the real Postgres server (tests/pg.py), each test in a schema of its own."""

from __future__ import annotations

from typing import Any

import pytest

import pg
from loomgraph import Agent, tool
from loomgraph.agent.answers import journal_answer, pending_of, resume_value
from loomgraph.agent.checkpoints import ApprovalRefused, RunOfAnotherAgent, ValueUsed
from loomgraph.agent.fleet import RunJob, fleet_queue
from loomgraph.agent.fleet_errors import RunJobPending
from loomgraph.engine.effects import BoundApproval
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest, RunStatus
from loomgraph.runtime import PostgresRuntime
from loomgraph.workers.advance import advance

pytestmark = pytest.mark.postgres
pg_schema = pg.pg_schema

PAID: list[tuple[str, int]] = []


@tool(destructive=True)
def pay(to: str, amount: int) -> str:
    """Pay someone."""
    PAID.append((to, amount))
    return f"paid {amount} to {to}"


def same_id_twice(request: ModelRequest) -> Any:
    """Asks to pay acme; denied, asks again with the same call id to pay mallory more."""
    if request.call_index == 0:
        return {"tool_calls": [{"id": "c1", "tool": "pay", "args": {"to": "acme", "amount": 5}}]}
    if request.call_index == 1:
        args = {"to": "mallory", "amount": 999}
        return {"tool_calls": [{"id": "c1", "tool": "pay", "args": args}]}
    return "done"


def agent(schema: str, name: str) -> Agent:
    runtime = PostgresRuntime(pg.postgres_dsn(), schema=schema)
    return Agent("x", model=ScriptedModel(same_id_twice), tools=[pay], runtime=runtime, name=name)


async def last_job(a: Agent, schema: str, run_id: str) -> RunJob:
    """The job the fleet holds for `run_id` (its payload, read from the queue's table)."""
    fleet = fleet_queue(a.deps.runtime)
    job_id, _ = await fleet.job_of(run_id)
    async with a.deps.runtime.transaction() as con:  # type: ignore[attr-defined]
        payload = await con.fetchval(
            f'SELECT payload FROM "{schema}".pgqueuer WHERE id = $1', job_id
        )
    return RunJob.decode(payload)


async def drop_jobs(a: Agent, schema: str, run_id: str) -> None:
    """Take the run's jobs out of the queue (the job read by `last_job` is kept by the test)."""
    async with a.deps.runtime.transaction() as con:  # type: ignore[attr-defined]
        await con.execute(f'DELETE FROM "{schema}".pgqueuer WHERE dedupe_key = $1', run_id)


async def test_a_submitted_answer_settles_its_request_or_nothing(pg_schema: str) -> None:
    PAID.clear()
    async with agent(pg_schema, "a") as a:
        fleet = fleet_queue(a.deps.runtime)
        await fleet.install()
        waiting = await a.run("pay", user_id="alice")
        record = await a.deps.runtime.load_run(waiting.run_id)
        assert record is not None
        first = pending_of(record)
        assert first is not None
        # Approver X answers the request it saw, through the fleet.
        await a.submit_resume(waiting.run_id, approve=BoundApproval("c1", True, key=first.key))
        job = await last_job(a, pg_schema, waiting.run_id)
        assert job.answer["approve"]["key"] == first.key  # the binding travels with the job
        # While it is queued, an answer by hand is refused (RunJobPending): the first stands.
        with pytest.raises(RunJobPending):
            await a.resume(waiting.run_id, approve=False)
        # The race that check cannot close: the job enqueued just after a hand answer's
        # check passed. Out of the queue here, the hand answer goes in first: approver Y
        # denies, and the model asks again, with the same id.
        await drop_jobs(a, pg_schema, waiting.run_id)
        again = await a.resume(waiting.run_id, approve=False)
        assert again.status == RunStatus.AWAITING_APPROVAL
        with pytest.raises(ApprovalRefused, match="request"):
            await advance(a, fleet, job)  # what a worker does with the job
        assert PAID == []
        record = await a.deps.runtime.load_run(waiting.run_id)
        assert record is not None and record.status == RunStatus.AWAITING_APPROVAL


async def test_only_the_runs_own_agent_cancels_it(pg_schema: str) -> None:
    async with agent(pg_schema, "a") as a, agent(pg_schema, "b") as b:
        await fleet_queue(a.deps.runtime).install()
        waiting = (await a.run("pay", user_id="alice")).run_id
        queued = await a.submit("pay", user_id="alice")
        for run_id in (waiting, queued):
            before = await a.deps.runtime.load_run(run_id)
            with pytest.raises(RunOfAnotherAgent, match="'a'"):
                await b.cancel(run_id, by="b")
            assert await a.deps.runtime.load_run(run_id) == before
        for run_id in (waiting, queued):
            await a.cancel(run_id, by="a")
            record = await a.deps.runtime.load_run(run_id)
            assert record is not None and record.status == RunStatus.CANCELLED


async def test_a_value_submitted_after_one_was_journaled_is_refused(
    pg_schema: str, tmp_path: Any
) -> None:
    """A resume killed between journaling a value and the run reading `running` leaves the
    run asking with its answer journaled: a second value is refused at submission
    (`ValueUsed`), as `agent.resume` refuses it, not queued for a worker to drop."""
    import answer_window_agent as window

    runtime = PostgresRuntime(pg.postgres_dsn(), schema=pg_schema)
    async with window.agent_on(runtime, "value", str(tmp_path / "ledger")) as a:
        await fleet_queue(a.deps.runtime).install()
        waiting = await a.run("work", user_id="alice")
        record = await a.deps.runtime.load_run(waiting.run_id)
        assert record is not None and record.status == RunStatus.INTERRUPTED
        limit = a.deps.size_limits.tool_args_chars
        assert await journal_answer(runtime, record, resume_value(record, 3), limit)
        with pytest.raises(ValueUsed):
            await a.submit_resume(waiting.run_id, value=4)
        assert (await fleet_queue(a.deps.runtime).job_of(waiting.run_id))[0] is None
