"""A value given to the fleet (`submit_resume`) is bound to the question it was checked
against: answered by hand while its job waits in the queue, the run's next question is not
the job's, and the worker uses nothing of it. Against the real Postgres server (tests/pg.py),
in a schema of its own."""

from __future__ import annotations

import pytest

import pg
from loomgraph import Agent
from loomgraph.agent.answers import pending_of
from loomgraph.agent.checkpoints import ValueNotPending
from loomgraph.agent.fleet import RunJob, fleet_queue
from loomgraph.agent.fleet_errors import RunJobPending
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.engine.effects import BoundValue
from loomgraph.models import ScriptedModel
from loomgraph.protocols import RunStatus
from loomgraph.runtime import PostgresRuntime
from loomgraph.workers.advance import advance
from test_answer_binding import BATCHES, GRAPH, run_batch

pytestmark = pytest.mark.postgres
pg_schema = pg.pg_schema


async def _job(agent: Agent, schema: str, run_id: str) -> RunJob:
    """The run's job, as a worker reads it from the queue."""
    job_id, _ = await fleet_queue(agent.deps.runtime).job_of(run_id)
    async with agent.deps.runtime.transaction() as con:  # type: ignore[attr-defined]
        payload = await con.fetchval(
            f'SELECT payload FROM "{schema}".pgqueuer WHERE id = $1', job_id
        )
    return RunJob.decode(payload)


async def test_a_queued_value_answers_its_question_or_nothing(pg_schema: str) -> None:
    BATCHES.clear()
    runtime = PostgresRuntime(pg.postgres_dsn(), schema=pg_schema)
    graph = graph_from_yaml(GRAPH)
    model = ScriptedModel(["-"])
    async with Agent(
        "x", model=model, tools=[run_batch], runtime=runtime, architecture=graph, name="b"
    ) as agent:
        fleet = fleet_queue(runtime)
        await fleet.install()
        first = await agent.run("work", user_id="alice")
        assert first.pending is not None
        await agent.submit_resume(first.run_id, value=True)
        job = await _job(agent, pg_schema, first.run_id)
        assert job.answer == {"value": True, "value_key": first.pending.key}
        # An answer by hand while the job is queued is refused: the queued one stands.
        with pytest.raises(RunJobPending):
            await agent.resume(first.run_id, value=True)
        # The race that cannot close: the job enqueued just after the hand answer's check.
        # Out of the queue here, the hand answer goes first: the run asks the next question
        # (500 items), which the queued `true` was never meant for.
        async with runtime.transaction() as con:
            await con.execute(
                f'DELETE FROM "{pg_schema}".pgqueuer WHERE dedupe_key = $1', first.run_id
            )
        by_hand = await agent.resume(first.run_id, value=True)
        assert by_hand.pending is not None and by_hand.pending.message.endswith("500 items?")
        with pytest.raises(ValueNotPending, match="answered already"):
            await advance(agent, fleet, job)  # what a worker does with the job
        record = await runtime.load_run(first.run_id)
        assert record is not None and record.status == RunStatus.INTERRUPTED
        assert pending_of(record) == by_hand.pending and BATCHES == [3]
        # Named by hand, a stale question is refused before anything is queued.
        with pytest.raises(ValueNotPending):
            await agent.submit_resume(first.run_id, value=BoundValue(True, first.pending.key))
        assert BATCHES == [3]
