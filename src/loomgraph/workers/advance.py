"""What a worker does with one job: start a queued run (a fork from the start its record
keeps), resume a crashed one from its journal, or go on with a waiting one's answer — each
under the run's lease and fencing."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Any

from loomgraph.agent.agent import Agent
from loomgraph.agent.answers import check_agent, check_owner
from loomgraph.agent.checkpoints import ApprovalExpired, ApprovalUsed, ValueUsed
from loomgraph.agent.fleet import FleetQueue
from loomgraph.agent.fleet_errors import JobUnusable
from loomgraph.agent.fleet_jobs import JobKind, RunJob
from loomgraph.agent.leases import hold_lease
from loomgraph.agent.result import RunResult
from loomgraph.agent.run_ending import cancel_aside
from loomgraph.engine.effects import BoundApproval
from loomgraph.graph.imports import import_object
from loomgraph.protocols import RunRecord, RunStatus

__all__ = ["Advanced", "Advancement", "advance", "advance_run", "fail_unstarted"]

log = logging.getLogger("loomgraph.workers")

# A person's answer was given: these runs wait for it.
_WAITING = frozenset({RunStatus.AWAITING_APPROVAL, RunStatus.INTERRUPTED})


class Advanced(enum.StrEnum):
    """What a job did to its run."""

    STARTED = "started"
    RESUMED = "resumed"  # after a worker died, or with a person's answer
    CANCELLED = "cancelled"  # someone asked to cancel it before it could go on
    FAILED = "failed"  # it never started, and its job cannot start it: journaled failed
    NOTHING = "nothing"  # it had stopped already (finished, failed, waiting, gone)


# The ends of a run the operator is told of as a warning: it will not go on by itself.
_GONE_WRONG = frozenset({RunStatus.FAILED, RunStatus.DEAD_LETTER})


@dataclass(frozen=True, slots=True)
class Advancement:
    """What a job did to its run, and the status (with its reason) it left the run in; no
    status when the journal holds no such run."""

    what: Advanced
    status: RunStatus | None = None
    reason: str = ""

    @property
    def gone_wrong(self) -> bool:
        """True when the run this job started or resumed ended failed or given up (a dead
        letter). A job that could not start its run (`FAILED`) was logged as an error when
        the run was journaled failed; a run found ended already is no news."""
        started = self.what in (Advanced.STARTED, Advanced.RESUMED)
        return started and self.status in _GONE_WRONG

    def __str__(self) -> str:
        if self.status is None or str(self.status) == str(self.what):
            said = str(self.what)  # "nothing" (no such run), "cancelled", "failed"
        elif self.what is Advanced.NOTHING:
            said = f"nothing to do, it is {self.status}"
        else:
            said = f"{self.what}, now {self.status}"
        return f"{said}: {self.reason}" if self.reason else said


async def advance(agent: Agent, fleet: FleetQueue, job: RunJob) -> Advanced:
    """What `advance_run` did to the run of `job`, without the status it left it in."""
    return (await advance_run(agent, fleet, job)).what


async def advance_run(agent: Agent, fleet: FleetQueue, job: RunJob) -> Advancement:
    """Advance the run of `job` as far as it goes now; what was done, and the run's status.

    Raises `RunConflict` while another live worker holds the run (the caller retries later),
    `LeaseLost` when the run was taken over meanwhile (this worker was stopped too long) and
    `RunOfAnotherAgent`, before the lease is taken, for a run an Agent of another name started.
    """
    runtime = agent.deps.runtime
    # Submitted by another agent (a queue two agents share)? A queued run's record names no
    # agent yet, its job does; a job naming none is left to the record's check below.
    check_owner(job.run_id, job.agent, agent.name)
    # Before the lease, which is a write: a run's agent is set when it starts (a queued run
    # has none yet) and never changes, and `agent.resume` checks it again below.
    seen = await runtime.load_run(job.run_id)
    if seen is not None:
        check_agent(seen, agent.name)
    async with hold_lease(agent.deps.leases, job.run_id):
        # Looked at only once the run is ours, so of two workers (a job picked again while
        # its first worker was merely slow) one starts the run, the other finds it started.
        # Everything below happens under this one lease: a cancel that lands after the check
        # finds the run held, and stops it at its next effect (the worker is told), instead
        # of journaling it cancelled in a gap the resume then overrides.
        record = await runtime.load_run(job.run_id)
        if record is None:
            log.warning("job for run %s, which the journal does not hold", job.run_id)
            return Advancement(Advanced.NOTHING)
        # Not queued: a worker started it before. Only a run journaled as running (its
        # worker died) or one whose answer this job brings goes on; a failed, cancelled or
        # finished run is left as it is (a job picked again must not run a failed run twice),
        # but for what a crash cut off its end (the job is picked again because its worker
        # died right after the end): done now, under this lease.
        answered = job.kind == JobKind.RESUME and record.status in _WAITING
        if record.status not in (RunStatus.QUEUED, RunStatus.RUNNING) and not answered:
            await _repair(agent, record)
            return Advancement(Advanced.NOTHING, record.status, record.reason or "")
        _, cancelled_by = await fleet.job_of(job.run_id)
        if cancelled_by is not None:
            # Asked while no worker could hear it (queued, its worker died, or it stopped to
            # wait before its next effect): it stands until the run is cancelled, audited as
            # any cancelled run (its `run_completed` kept with the end).
            reason = f"cancelled by {cancelled_by}"
            await cancel_aside(agent.deps, record, reason)
            return Advancement(Advanced.CANCELLED, RunStatus.CANCELLED, reason)
        if record.status == RunStatus.QUEUED and (
            job.kind == JobKind.FORK or record.initial is not None
        ):
            # A fork (`submit_fork`): its start is in the journal, not in its job.
            try:
                result = await agent.resumer().start_fork(agent.deps.hooks.on_event, job.run_id)
            except JobUnusable as err:  # no fork: nothing else would start the run
                return await _fail(runtime, job.run_id, err)
            return _left(Advanced.STARTED, result)
        if record.status == RunStatus.QUEUED:
            options: dict[str, Any] = {}
            if job.output_schema:
                try:
                    schema = import_object(job.output_schema, what="output schema")
                except ImportError as err:
                    # Not on this worker (workers must run the agent's code, as its servers
                    # do): no worker of this deployment starts the run, so it fails now
                    # rather than wait `queued` for ever.
                    unusable = JobUnusable(f"the job's output schema cannot be imported: {err}")
                    return await _fail(runtime, job.run_id, unusable)
                options["output_schema"] = schema
            if job.output_retries is not None:
                options["output_retries"] = job.output_retries
            session = agent.session(
                job.prompt,
                user_id=record.user_id,
                session_id=record.session_id,
                run_id=job.run_id,
                **options,
            )
            result = await session.execute(agent.deps.hooks.on_event, leased=True)
            return _left(Advanced.STARTED, result)
        result = await _resume(agent, job.run_id, **(job.answer if answered else {}))
        return _left(Advanced.RESUMED, result)


def _left(what: Advanced, result: RunResult) -> Advancement:
    """`what` the job did, and where the run it started or resumed stopped."""
    return Advancement(what, result.status, result.reason or "")


async def fail_unstarted(agent: Agent, run_id: str, why: Exception) -> bool:
    """Journal a run that never started `failed`, `why` (its type and message) the reason:
    its job cannot start it (`JobUnusable`) and no job is left to, so `wait` ends instead of
    seeing it `queued` for ever. Read and written under the run's lease, like a cancel of
    a queued run; a run that is not `queued` (it started, or ended) is left as it is.

    True when the run was failed. Raises `RunConflict` while another worker holds the run."""
    async with hold_lease(agent.deps.leases, run_id):
        record = await agent.deps.runtime.load_run(run_id)
        if record is None or record.status != RunStatus.QUEUED:
            return False
        await _fail(agent.deps.runtime, run_id, why)
        return True


async def _fail(runtime: Any, run_id: str, why: Exception) -> Advancement:
    """The queued run, whose lease the caller holds, journaled `failed` because of `why`."""
    reason = f"{type(why).__name__}: {why}"
    log.error("run %s cannot be started, journaled failed: %s", run_id, reason)
    await runtime.finish_run(run_id, RunStatus.FAILED, reason, None)
    return Advancement(Advanced.FAILED, RunStatus.FAILED, reason)


async def _repair(agent: Agent, record: RunRecord) -> None:
    """What an outage or a crash cut off the end of a run the job leaves as it is (the
    audit entries its journal kept, the episode it owes memory; a dead letter's close: its
    worker died right after giving it up), done under the lease the caller holds, as the
    resume of a finished run does it (`Resumer.repair`): a read or two when there is
    nothing."""
    await agent.resumer().repair(record, agent.deps.hooks.on_event)


async def _resume(agent: Agent, run_id: str, **answer: Any) -> RunResult:
    """`agent.resume` under the lease the caller holds, counting a recovery when the run
    crashed (dead letter after N); with the job's answer, or with the one the run's journal
    holds already (the answer is used once)."""
    if "approve" in answer and isinstance(answer["approve"], dict):
        # Bound to the request `submit_resume` checked it against (its `key`; a job written
        # before jobs kept it has none): never to a later request for a same-id call.
        answer["approve"] = BoundApproval(**answer["approve"])
    resumer = agent.resumer()  # `agent.resume`, told the lease is held already
    sink = agent.deps.hooks.on_event
    try:
        return await resumer.resume(sink, run_id, leased=True, **answer)
    except ApprovalExpired as late:
        if not answer:
            raise
        # Taken up after the request's deadline (the queue was slow): the answer is late, as
        # a resume's by hand would be, and the run goes on without it: the call is denied as
        # timed out, which is what the deadline is for.
        log.warning("run %s: the job's answer came too late: %s", run_id, late)
        return await resumer.resume(sink, run_id, leased=True)
    except (ApprovalUsed, ValueUsed) as used:
        if not answer:
            raise
        # The run still reads waiting, its answer journaled: the worker that took this job
        # up died between the two writes (or a resume by hand did). That answer stands (it
        # is this job's, unless one was given by hand meanwhile): the run goes on with it.
        log.info("run %s: going on with the answer it was given: %s", run_id, used)
        return await resumer.resume(sink, run_id, leased=True)
