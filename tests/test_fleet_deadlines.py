"""Approval deadlines on a worker fleet. An answer submitted in time but taken up by a worker
after the request's deadline is refused as late, and the worker goes on without it: the
call is denied as timed out (approver `timeout`) and the run goes on, as the next resume of
an expired request does by hand. After the deadline, `submit_resume(run_id)` with no answer
sends the run on the same way; before it, the run waits for an answer (`AnswerNeeded`) and
nothing is queued. Against the real Postgres server (tests/pg.py), each test in a schema of
its own; the desk's clock is moved on by the test, never slept on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import desk_clock
import fleet_agent
import pg
import test_fleet
from loomgraph import Agent
from loomgraph.agent.answers import pending_of
from loomgraph.agent.checkpoints import ApprovalExpired
from loomgraph.agent.fleet import FleetQueue, fleet_queue
from loomgraph.agent.resume_errors import AnswerNeeded
from loomgraph.engine.effects import BoundApproval
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.protocols import RunRecord, RunStatus
from loomgraph.runtime import PostgresRuntime
from loomgraph.workers.advance import advance
from loomgraph.workers.expiry import send_on_expired
from test_fleet_answers import PAID, last_job, pay

pytestmark = pytest.mark.postgres
pg_schema = pg.pg_schema
env = test_fleet.env

clock = desk_clock.clock


PAY = {"tool_calls": [{"id": "c1", "tool": "pay", "args": {"to": "acme", "amount": 5}}]}


@contextlib.asynccontextmanager
async def waiting(schema: str) -> AsyncIterator[tuple[Agent, FleetQueue, RunRecord]]:
    """A fleet agent whose requests expire after 60 s, and its fleet run waiting for
    approval (submitted, started by a worker's `advance`)."""
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
        run_id = await a.submit("pay", user_id="alice")
        await advance(a, fleet, await last_job(a, schema, run_id))  # a worker starts it
        async with a.deps.runtime.transaction() as con:  # type: ignore[attr-defined]
            # ... and ends its job, as pgqueuer does once the worker's handler returns.
            await con.execute(f'DELETE FROM "{schema}".pgqueuer WHERE dedupe_key = $1', run_id)
        record = await a.deps.runtime.load_run(run_id)
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
        assert await fleet.pending_job(run_id) is None
        assert await a.deps.runtime.load_run(run_id) == record
        clock.offset += 3600
        with pytest.raises(ApprovalExpired, match="submit_resume"):  # says how to go on
            await a.submit_resume(run_id, approve=True)
        await a.submit_resume(run_id)
        await advance(a, fleet, await last_job(a, pg_schema, run_id))
        await _timed_out(a, run_id)


async def test_workers_send_on_a_run_nobody_answered_in_time(
    pg_schema: str, clock: type[desk_clock.Clock]
) -> None:
    """A worker's look for expired requests queues the plain resume itself, once however
    many workers look together; before the deadline it queues nothing."""
    async with waiting(pg_schema) as (a, fleet, record):
        assert await send_on_expired(a, fleet) == 0  # in time: a person may still answer
        assert await fleet.pending_job(record.run_id) is None
        clock.offset += 3600
        looks = await asyncio.gather(*(send_on_expired(a, fleet) for _ in range(3)))
        assert sum(looks) == 1
        await advance(a, fleet, await last_job(a, pg_schema, record.run_id))
        await _timed_out(a, record.run_id)
        assert await send_on_expired(a, fleet) == 0  # it waits no more


async def test_the_workers_look_reads_waiting_runs_through_an_index(pg_schema: str) -> None:
    """Each worker looks every few seconds: the journal's waiting runs are found through a
    partial index of the Postgres journal (`runs_awaiting_approval`), not by reading the
    whole `runs` table of a large journal; a journal made before it gains it when opened."""

    async def index(con: Any) -> str | None:
        found: str | None = await con.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname = $2",
            pg_schema,
            "runs_awaiting_approval",
        )
        return found

    async with (
        waiting(pg_schema) as (a, fleet, _),
        a.deps.runtime.transaction() as con,  # type: ignore[attr-defined]
    ):
        made = await index(con)
        assert made is not None and "WHERE (status = 'awaiting_approval'" in made, made
        await con.execute("SET LOCAL enable_seqscan = off")  # a tiny table: ask for it
        plan = await con.fetch("EXPLAIN " + fleet.expired_query, a.name, 0.0, 100)
        assert "runs_awaiting_approval" in " ".join(row[0] for row in plan)
        await con.execute(f'DROP INDEX "{pg_schema}".runs_awaiting_approval')
    older = PostgresRuntime(pg.postgres_dsn(), schema=pg_schema)  # as before the index
    try:
        async with older.transaction() as con:
            assert await index(con) is not None
    finally:
        await older.close()


async def test_a_worker_sends_on_an_expired_request_by_itself(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A real `loomgraph worker` (looking every 0.2 s) ends a run nobody answered in time:
    the third `work` call, which asked, is denied as timed out and never runs. The workers'
    desk clock follows a file the test writes."""
    clock = tmp_path / "clock"
    workers = test_fleet.fleet(
        {**env, "FLEET_ASK": "1", "FLEET_CLOCK_FILE": str(clock)}, tmp_path, "--expiry", "0.2"
    )
    # The same policy as the workers' (a run is pinned to it), on the real clock.
    policy = StandardPermissions(allow=["work"], ask=["work(item=c)"], approval_timeout_s=60.0)
    submitter = fleet_agent.make(permissions=policy)
    workers.start()
    try:
        run_id = await submitter.submit("ask", user_id="u")
        stopped = await submitter.wait(run_id, timeout=60)
        assert stopped.status == RunStatus.AWAITING_APPROVAL, stopped.reason
        clock.write_text("3600")  # nobody answered for an hour

        async def ended() -> Any:
            record = await submitter.deps.runtime.load_run(run_id)
            return record is not None and record.status == RunStatus.COMPLETED

        await test_fleet.until("the run to be sent on and end", ended, 60)
        effects = await submitter.deps.runtime.effects(run_id)
        answers = [e.outcome["by"] for e in effects if e.kind == "approval"]
        worked = await test_fleet.sql(f"SELECT key FROM {env['FLEET_SCHEMA']}.attempts")
    finally:
        workers.stop()
        await submitter.aclose()
    assert answers == ["timeout"]
    assert len(worked) == 2  # the two calls that were allowed; the asking one never ran
