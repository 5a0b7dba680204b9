"""What a caller gives a fleet job, checked and put in the job's terms before anything is
written (`agent.submitting`): where and when the job runs (priority, queue, `run_at`), the
run's output type as the import path a worker loads it by, and an answer for a waiting run,
checked against what the run waits for and bound to that request. And read back: the input a
queued run was submitted with, which only its job holds until a worker starts the run.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

from loomgraph.agent.answers import approval, not_answered, resume_value
from loomgraph.agent.fleet import check_run_agent, fleet_queue
from loomgraph.agent.fleet_errors import FleetError, FleetNeedsPostgres
from loomgraph.agent.fleet_jobs import JobKind, RunJob
from loomgraph.agent.resume_answers import unanswered
from loomgraph.engine.effects import BoundApproval, BoundValue
from loomgraph.protocols import Deps, Runtime, UnknownRun

__all__ = ["answer_job", "check_placement", "delay_of", "schema_path", "submitted_prompt"]


def schema_path(output_schema: Any) -> str | None:
    """`module:QualName` of an output type, which every worker can import."""
    if output_schema is None:
        return None
    module = getattr(output_schema, "__module__", None)
    name = getattr(output_schema, "__qualname__", "")
    if not isinstance(output_schema, type) or not module or "<locals>" in name:
        raise FleetError(
            f"output_schema {output_schema!r} must be a class defined at module level: a "
            "worker imports it by name (module:QualName) to check the answer"
        )
    return f"{module}:{name}"


def delay_of(run_at: datetime | float | None) -> float | None:
    """Seconds from now until `run_at` (a datetime with a time zone, or finite epoch
    seconds); FleetError for anything else (text, a date, NaN), before anything is written."""
    if run_at is None:
        return None
    if isinstance(run_at, datetime):
        if run_at.tzinfo is None:
            raise FleetError(f"run_at {run_at!r} has no time zone; give an aware datetime")
        return max(0.0, (run_at - datetime.now(UTC)).total_seconds())
    if not isinstance(run_at, int | float) or isinstance(run_at, bool):
        raise FleetError(
            "run_at must be an aware datetime or epoch seconds (a number), not "
            f"{type(run_at).__name__}: {run_at!r}"
        )
    if not math.isfinite(run_at):
        raise FleetError(f"run_at must be finite epoch seconds, not {run_at!r}")
    return max(0.0, float(run_at) - time.time())


# The queue keeps a job's priority in a Postgres `integer`.
PRIORITIES = range(-(2**31), 2**31)


def check_placement(priority: int, queue: str | None) -> None:
    """FleetError for a job's priority that is not an int the queue keeps, or a queue that
    is not a name."""
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise FleetError(f"priority must be an int, not {type(priority).__name__}")
    if priority not in PRIORITIES:
        raise FleetError(
            f"priority must be from {PRIORITIES.start} to {PRIORITIES.stop - 1}, not {priority}"
        )
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise FleetError(f"queue must be a non-empty name, not {queue!r}")


async def answer_job(
    deps: Deps, run_id: str, answer: dict[str, Any], agent_name: str, given_at: float
) -> RunJob:
    """The job carrying `answer` (given at `given_at`), checked against what the run waits
    for now and the agent it belongs to."""
    record = await deps.runtime.load_run(run_id)
    if record is None:
        raise UnknownRun(run_id)
    await check_run_agent(deps.runtime, record, agent_name)
    if not answer:
        unanswered(record)
    elif "value" in answer:
        given = answer["value"]
        asked = resume_value(record, given)  # the typed error now, not in a worker's log
        await not_answered(deps.runtime, record)  # a value journaled already stands
        # Bound to the question it was checked against (as an approval's job keeps its
        # `key`): answered by hand meanwhile, the run's next question is not this one's.
        plain = given.value if isinstance(given, BoundValue) else given
        answer = {"value": plain, "value_key": asked.key} if asked.key else {"value": plain}
    else:
        checked = approval(record, answer["approve"], given_at)
        # An answer journaled already stands (approvals are used once): refused here, as
        # `agent.resume` refuses it, rather than queued for a worker to drop.
        await not_answered(deps.runtime, record, checked.call_id)
        answer = {"approve": _approval_data(checked)}
    return RunJob(run_id, JobKind.RESUME, user_id=record.user_id, answer=answer)


def _approval_data(answer: BoundApproval) -> dict[str, Any]:
    """An approval as the data `agent.resume(approve=...)` takes back, bound to the request
    it was checked against (`key`): the worker's resume settles that request or nothing."""
    return {
        "call_id": answer.call_id,
        "allow": answer.allow,
        "args": answer.args,
        "approver": answer.approver,
        "reason": answer.reason,
        "key": answer.key,
    }


async def submitted_prompt(runtime: Runtime, run_id: str) -> str | None:
    """The input a queued run was submitted with, from its `start` job while that waits or a
    worker is taking it up (the journal keeps a run's input from its start on). None when it
    has no such job: not a fleet run, a fork (its start is journaled), a run that started or
    never will (pgqueuer keeps no payload of a job that ended), or a job this version of
    loomgraph cannot read."""
    try:
        fleet = fleet_queue(runtime)
    except FleetNeedsPostgres:
        return None
    payload = await fleet.pending_payload(run_id)
    if payload is None:
        return None
    try:
        job = RunJob.decode(payload)
    except FleetError:  # JobUnusable, JobFromNewerVersion: a worker reports it, not a read
        return None
    return job.prompt if job.kind == JobKind.START else None
