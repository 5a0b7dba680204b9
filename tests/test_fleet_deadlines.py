"""Approval deadlines on a worker fleet. An answer submitted in time but taken up by a worker
after the request's deadline is refused as late, and the worker goes on without it: the
call is denied as timed out (approver `timeout`) and the run goes on, as the next resume of
an expired request does by hand. After the deadline, `submit_resume(run_id)` with no answer
sends the run on the same way; before it, the run waits for an answer (`AnswerNeeded`) and
nothing is queued. Against the real Postgres server (tests/pg.py), each test in a schema of
its own; the desk's clock is moved on by the test, never slept on."""

from __future__ import annotations

import pytest

import desk_clock
import pg
from loomgraph import Agent, tool
from loomgraph.agent.checkpoints import ApprovalExpired, pending_of
from loomgraph.agent.fleet import RunJob, fleet_queue
from loomgraph.agent.resume_errors import AnswerNeeded
from loomgraph.engine.effects import BoundApproval
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.protocols import RunStatus
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


clock = desk_clock.clock


PAY = {"tool_calls": [{"id": "c1", "tool": "pay", "args": {"to": "acme", "amount": 5}}]}


def agent(schema: str) -> Agent:
    PAID.clear()
    return Agent(
        "x",
        model=ScriptedModel([PAY, "done"]),
        tools=[pay],
        permissions=StandardPermissions(ask=["pay"], approval_timeout_s=60),
        runtime=PostgresRuntime(pg.postgres_dsn(), schema=schema),
    )


async def _job(a: Agent, schema: str, run_id: str) -> RunJob:
    job_id, _ = await fleet_queue(a.deps.runtime).job_of(run_id)
    assert job_id is not None
    async with a.deps.runtime.transaction() as con:  # type: ignore[attr-defined]
        payload = await con.fetchval(
            f'SELECT payload FROM "{schema}".pgqueuer WHERE id = $1', job_id
        )
    return RunJob.decode(payload)


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
    async with agent(pg_schema) as a:
        fleet = fleet_queue(a.deps.runtime)
        await fleet.install()
        waiting = await a.run("pay", user_id="alice")
        record = await a.deps.runtime.load_run(waiting.run_id)
        assert record is not None
        pending = pending_of(record)
        assert pending is not None and pending.deadline is not None
        await a.submit_resume(
            waiting.run_id, approve=BoundApproval("c1", allow, key=pending.key)
        )  # in time
        job = await _job(a, pg_schema, waiting.run_id)
        clock.offset += 3600  # the queue was slow: a worker takes the job an hour later
        await advance(a, fleet, job)
        await _timed_out(a, waiting.run_id)


async def test_without_an_answer_a_run_goes_on_only_past_its_deadline(
    pg_schema: str, clock: type[desk_clock.Clock]
) -> None:
    async with agent(pg_schema) as a:
        fleet = fleet_queue(a.deps.runtime)
        await fleet.install()
        waiting = await a.run("pay", user_id="alice")
        before = await a.deps.runtime.load_run(waiting.run_id)
        with pytest.raises(AnswerNeeded, match="approve="):
            await a.submit_resume(waiting.run_id)  # in time: the run waits for a person
        assert (await fleet.job_of(waiting.run_id))[0] is None
        assert await a.deps.runtime.load_run(waiting.run_id) == before
        clock.offset += 3600
        with pytest.raises(ApprovalExpired, match="submit_resume"):  # says how to go on
            await a.submit_resume(waiting.run_id, approve=True)
        await a.submit_resume(waiting.run_id)
        await advance(a, fleet, await _job(a, pg_schema, waiting.run_id))
        await _timed_out(a, waiting.run_id)
