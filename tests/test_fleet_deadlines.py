"""Approval deadlines on a worker fleet. An answer submitted in time but taken up by a worker
after the request's deadline is refused as late, and the worker goes on without it: the
call is denied as timed out (approver `timeout`) and the run goes on, as the next resume of
an expired request does by hand. After the deadline, `submit_resume(run_id)` with no answer
sends the run on the same way; before it, the run waits for an answer (`AnswerNeeded`) and
nothing is queued. Against the real Postgres server (tests/pg.py), each test in a schema of
its own; the desk's clock is moved on by the test, never slept on."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

import desk_clock
import pg
from loomgraph import Agent
from loomgraph.agent.checkpoints import ApprovalExpired, pending_of
from loomgraph.agent.fleet import FleetQueue, fleet_queue
from loomgraph.agent.resume_errors import AnswerNeeded
from loomgraph.engine.effects import BoundApproval
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.protocols import RunRecord, RunStatus
from loomgraph.runtime import PostgresRuntime
from loomgraph.workers.advance import advance
from test_fleet_answers import PAID, last_job, pay

pytestmark = pytest.mark.postgres
pg_schema = pg.pg_schema

clock = desk_clock.clock


PAY = {"tool_calls": [{"id": "c1", "tool": "pay", "args": {"to": "acme", "amount": 5}}]}


@contextlib.asynccontextmanager
async def waiting(schema: str) -> AsyncIterator[tuple[Agent, FleetQueue, RunRecord]]:
    """A fleet agent whose requests expire after 60 s, and its run waiting for approval."""
    PAID.clear()
    async with Agent(
        "x",
        model=ScriptedModel([PAY, "done"]),
        tools=[pay],
        permissions=StandardPermissions(ask=["pay"], approval_timeout_s=60),
        runtime=PostgresRuntime(pg.postgres_dsn(), schema=schema),
    ) as a:
        fleet = fleet_queue(a.deps.runtime)
        await fleet.install()
        stopped = await a.run("pay", user_id="alice")
        record = await a.deps.runtime.load_run(stopped.run_id)
        assert record is not None and record.status == RunStatus.AWAITING_APPROVAL
        yield a, fleet, record


async def _timed_out(a: Agent, run_id: str) -> None:
    """The run ended, its call denied as timed out: nothing paid, the denial journaled."""
    record = await a.deps.runtime.load_run(run_id)
    assert record is not None and record.status == RunStatus.COMPLETED, record
    assert PAID == []
    answers = [e for e in await a.deps.runtime.effects(run_id) if e.kind == "approval"]
    assert [e.outcome["by"] for e in answers] == ["timeout"]
    messages = (await a.history(run_id))[-1].state["messages"]
    [denied] = [m for m in messages if m.get("role") == "tool"]
    assert "approval timed out" in denied["content"]


@pytest.mark.parametrize("allow", [True, False])
async def test_an_answer_taken_up_after_the_deadline_is_late_and_the_run_goes_on(
    pg_schema: str, clock: type[desk_clock.Clock], allow: bool
) -> None:
    async with waiting(pg_schema) as (a, fleet, record):
        pending = pending_of(record)
        assert pending is not None and pending.deadline is not None
        answer = BoundApproval("c1", allow, key=pending.key)
        await a.submit_resume(record.run_id, approve=answer)  # in time
        job = await last_job(a, pg_schema, record.run_id)
        clock.offset += 3600  # the queue was slow: a worker takes the job an hour later
        await advance(a, fleet, job)
        await _timed_out(a, record.run_id)


async def test_without_an_answer_a_run_goes_on_only_past_its_deadline(
    pg_schema: str, clock: type[desk_clock.Clock]
) -> None:
    async with waiting(pg_schema) as (a, fleet, record):
        run_id = record.run_id
        with pytest.raises(AnswerNeeded, match="answer it"):
            await a.submit_resume(run_id)  # in time: the run waits for a person
        assert (await fleet.job_of(run_id))[0] is None
        assert await a.deps.runtime.load_run(run_id) == record
        clock.offset += 3600
        with pytest.raises(ApprovalExpired, match="submit_resume"):  # says how to go on
            await a.submit_resume(run_id, approve=True)
        await a.submit_resume(run_id)
        await advance(a, fleet, await last_job(a, pg_schema, run_id))
        await _timed_out(a, run_id)
