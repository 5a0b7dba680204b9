"""Runs handed to a worker fleet: submit, fork, submit an answer, wait for the result, cancel.

`Agent.submit`, `submit_fork`, `submit_resume`, `wait` and `cancel` are thin calls of these. A
submitted run (a fork too) is journaled `queued` and its job enqueued in one transaction of
the Postgres journal, so no run is journaled but never enqueued, or enqueued but not
journaled (`agent.fleet`). What a call gives its job (placement, output type, an answer) is
checked in `agent.job_inputs` before anything is written.
"""

from __future__ import annotations

import asyncio
import enum
import math
import time
import uuid
import weakref
from dataclasses import replace
from datetime import datetime
from typing import Any

from loomgraph.agent.answers import given_now
from loomgraph.agent.arguments import check_text
from loomgraph.agent.fleet import FleetQueue, check_run_agent
from loomgraph.agent.fleet import fleet_queue as queue_of
from loomgraph.agent.fleet_errors import FleetError, RunJobPending
from loomgraph.agent.fleet_jobs import JobKind, RunJob
from loomgraph.agent.job_inputs import answer_job, check_placement, delay_of, schema_path
from loomgraph.agent.leases import hold_lease
from loomgraph.agent.pinning import graph_key, pin
from loomgraph.agent.result import RunResult
from loomgraph.agent.resuming import Resumer
from loomgraph.agent.run_ending import cancel_aside
from loomgraph.errors import InputTooLarge
from loomgraph.graph.compiled import CompiledGraph
from loomgraph.protocols import Deps, RunRecord, RunStatus, UnknownRun
from loomgraph.runtime.errors import RunConflict

__all__ = [
    "CancelOutcome",
    "CancelReasonInvalid",
    "RunJobPending",
    "RunNotCancellable",
    "RunWaitTimeout",
    "cancel",
    "cancel_idle",
    "submit",
    "submit_fork",
    "submit_resume",
    "wait",
]

# How long `submit_resume` waits for the job that stopped a run to end (its worker ends it
# right after the run stopped to wait) before it refuses the answer (`RunJobPending`).
ANSWER_WAIT_SECONDS = 5.0

# Journals whose queue tables were checked by this process (once each, not per submit).
_installed: weakref.WeakSet[Any] = weakref.WeakSet()


class RunWaitTimeout(FleetError, TimeoutError):
    """`agent.wait` gave up: the run had not stopped within the timeout."""

    def __init__(self, run_id: str, timeout: float, status: str) -> None:
        super().__init__(f"run {run_id} did not stop within {timeout} s (it is {status})")
        self.run_id = run_id
        self.status = status


class RunNotCancellable(FleetError):
    """The run ended already (completed, cancelled, a dead letter …): nothing to cancel."""

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"run {run_id} is {status}: there is nothing to cancel")
        self.run_id = run_id
        self.status = status


class CancelReasonInvalid(FleetError, ValueError):
    """Who cancels (`by`), or the reason a cancel journals, is no text or blank: refused
    before anything is written (it would be journaled as `cancelled by None`, or a write
    half done)."""

    def __init__(self, name: str, value: object) -> None:
        super().__init__(
            f"{name} must be non-blank text (it is journaled as why the run was cancelled), "
            f"got {value!r}"
        )
        self.name = name


def _check_cancel_text(name: str, value: object) -> None:
    """`CancelReasonInvalid` unless `value` is a str with something besides blanks."""
    if not isinstance(value, str) or not value.strip():
        raise CancelReasonInvalid(name, value)


class CancelOutcome(enum.StrEnum):
    """What `agent.cancel` did."""

    CANCELLED = "cancelled"  # nobody was advancing the run: it is journaled cancelled now
    STOPPING = "stopping"  # a worker advances it: it stops at its next effect boundary


async def _queue(deps: Deps) -> FleetQueue:
    queue = queue_of(deps.runtime)
    if deps.runtime not in _installed:
        await queue.install()
        _installed.add(deps.runtime)
    return queue


async def submit(
    deps: Deps,
    compiled: CompiledGraph,
    prompt: str,
    *,
    user_id: str | None,
    session_id: str | None,
    output_schema: Any,
    output_retries: int | None,
    priority: int,
    run_at: datetime | float | None,
    queue: str,
    agent_name: str = "",
) -> str:
    """Journal a run as `queued` and enqueue its job, in one transaction; the run id. Only
    a worker whose Agent is called `agent_name` will start it."""
    check_text("prompt", prompt)
    check_text("user_id", user_id, optional=True)
    check_text("session_id", session_id, optional=True)
    limit = deps.size_limits.prompt_chars
    if len(prompt) > limit:  # refused before anything is written
        raise InputTooLarge("the prompt", len(prompt), limit)
    check_placement(priority, queue)
    fleet = await _queue(deps)
    run_id = uuid.uuid4().hex
    now = time.time()
    record = RunRecord(
        run_id,
        compiled.name,
        graph_key(compiled),
        user_id,
        session_id,
        status=RunStatus.QUEUED,
        created_at=now,
        updated_at=now,
    )
    job = RunJob(
        run_id,
        JobKind.START,
        user_id=user_id,
        prompt=prompt,
        session_id=session_id,
        output_schema=schema_path(output_schema),
        output_retries=output_retries,
        agent=agent_name,
    )
    delay = delay_of(run_at)

    async def enqueue(con: Any) -> int:
        return await fleet.enqueue(con, job, queue=queue, priority=priority, delay=delay)

    await deps.runtime.start_run_with(record, enqueue)  # type: ignore[attr-defined]
    return run_id


async def submit_fork(
    resumer: Resumer,
    run_id: str,
    *,
    at: int,
    patch: dict[str, Any] | None,
    priority: int,
    queue: str,
) -> str:
    """Journal a fork of checkpoint `at` of `run_id` as `queued`, with the start it goes on
    from (its state, node, visits, parent), and enqueue its `start_fork` job, in one
    transaction; the new run's id. A worker starts it, and the fleet recovers it like any
    run. Refused before anything is written as `Agent.fork` refuses (`RunQueued`, an unknown
    checkpoint, a patch that does not fit, `RunOfAnotherAgent`)."""
    check_placement(priority, queue)
    deps = resumer.deps
    fleet = await _queue(deps)
    _, forked, _ = await resumer.prepare_fork(run_id, at=at, patch=patch)
    record = replace(forked, status=RunStatus.QUEUED)
    job = RunJob(
        record.run_id,
        JobKind.FORK,
        user_id=record.user_id,
        session_id=record.session_id,
        agent=resumer.agent_name,
    )
    # The graph the fork goes on with, for the worker that starts it (kept by its hash; a
    # graph pinned for a fork that then failed to commit is only an unused row).
    await pin(deps.runtime, resumer.compiled)

    async def enqueue(con: Any) -> int:
        return await fleet.enqueue(con, job, queue=queue, priority=priority, delay=None)

    await deps.runtime.start_run_with(record, enqueue)  # type: ignore[attr-defined]
    return record.run_id


async def submit_resume(
    deps: Deps,
    run_id: str,
    *,
    answer: dict[str, Any],
    priority: int = 0,
    queue: str | None = None,
    agent_name: str = "",
) -> None:
    """Enqueue the answer a waiting run needs (`approve=` or `value=`; none, past an expired
    approval request), checked first against what the run waits for and the Agent that
    started it (`agent_name` must be its name, when it had one: `RunOfAnotherAgent`); a
    worker goes on with it. `queue`: the run's own by default (the one it was submitted
    to), so the workers that serve it see the answer.
    The job is bound to the request the answer was checked against (an approval's `key`, a
    value's `value_key`): a worker uses it for that request or not at all."""
    given_at = given_now()  # before any read: an answer approves no later request
    if len(answer) > 1 or not set(answer) <= {"approve", "value"}:
        raise FleetError("submit_resume takes one of approve= or value=, or neither")
    check_placement(priority, queue)
    fleet = await _queue(deps)
    deadline = time.monotonic() + ANSWER_WAIT_SECONDS
    while True:
        job = await answer_job(deps, run_id, answer, agent_name, given_at)
        try:
            async with deps.runtime.transaction() as con:  # type: ignore[attr-defined]
                where = queue or await fleet.run_queue(con, run_id)
                await fleet.enqueue(con, job, queue=where, priority=priority, delay=None)
            return
        except _duplicate_job() as err:
            # The run has a job already (one per run). A queued one holds an answer given
            # before this one: refused, that answer stands. A picked one is, after a run
            # stopped to wait, the job that stopped it, which its worker ends at once: wait
            # for that (bounded), then check the answer again against the run.
            status = await fleet.pending_job(run_id)  # None: it ended meanwhile
            if status == "queued" or time.monotonic() >= deadline:
                raise RunJobPending(run_id, status or "picked") from err
        await asyncio.sleep(0.05)


def _duplicate_job() -> type[Exception]:
    """pgqueuer's refusal of a second job with a run's dedupe key (imported with the
    fleet, not with loomgraph)."""
    from pgqueuer.errors import DuplicateJobError

    return DuplicateJobError


async def wait(
    deps: Deps, run_id: str, *, timeout: float | None, poll_interval: float = 0.1
) -> RunResult:
    """The run's result once it stopped (finished, failed, cancelled, or waiting for a
    person), wherever it runs; `RunWaitTimeout` after `timeout` seconds. A crashed run is
    waited for while the fleet will recover it (its job is queued or picked)."""
    check_text("run_id", run_id)
    if timeout is not None:
        _check_seconds("timeout", timeout)
    _check_seconds("poll_interval", poll_interval, positive=True)
    runtime = deps.runtime
    fleet = await _queue(deps)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        settled = await _settled(fleet, run_id)
        # Read after the check: a run that finished (and let go of its lease) between a read
        # and the check would otherwise be answered with what it was before it finished.
        record = await runtime.load_run(run_id)
        if record is None:
            raise UnknownRun(run_id)
        if settled:
            if record.result is not None:
                return RunResult.from_dict(record.result)
            return RunResult(
                None,
                run_id,
                record.session_id,
                record.user_id,
                record.status,
                record.reason,
            )
        if deadline is not None and time.monotonic() >= deadline:
            raise RunWaitTimeout(run_id, timeout or 0.0, str(record.status))
        pause = (
            poll_interval if deadline is None else min(poll_interval, deadline - time.monotonic())
        )
        await asyncio.sleep(max(pause, 0.0))


def _check_seconds(name: str, value: object, *, positive: bool = False) -> None:
    """FleetError unless `value` is a finite number of seconds (not a bool), 0 or more (more
    than 0 when `positive`)."""
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > 0 or (value == 0 and not positive))
    ):
        return
    least = "more than 0" if positive else "0 or more"
    raise FleetError(f"{name} must be a number of seconds, {least}, not {value!r}")


async def _settled(fleet: FleetQueue, run_id: str) -> bool:
    """True when nothing will move the run on by itself: no worker holds its lease and no
    job of it is queued or picked. A run still `running` then (its worker died and no job
    will recover it: it was not submitted, or its job failed) is settled too, so `wait`
    never waits for ever on a run nobody advances."""
    lease = await fleet.runtime.lease(run_id)
    if lease is not None and lease.expires_at > time.time():
        return False  # being advanced: the status changes when that ends
    job_id, _ = await fleet.job_of(run_id)
    if job_id is None:
        return True
    async with fleet.runtime.transaction() as con:
        statuses = dict(await fleet.queries(con).job_status([job_id]))
    return statuses.get(job_id) not in ("queued", "picked")


async def cancel(deps: Deps, run_id: str, *, by: str, agent_name: str = "") -> CancelOutcome:
    """Cancel a run from anywhere: one nobody advances is journaled `cancelled` at once (a
    queued one never starts); one a worker advances stops at its next effect boundary. A run
    another named Agent started or submitted is refused (`RunOfAnotherAgent`), as is a `by`
    that is no text or blank (`CancelReasonInvalid`), before anything is written."""
    _check_cancel_text("by", by)
    runtime = deps.runtime
    fleet = await _queue(deps)
    record = await runtime.load_run(run_id)
    if record is None:
        raise UnknownRun(run_id)
    # A queued run's record names no agent yet: its job's does.
    await check_run_agent(runtime, record, agent_name)
    if record.status.final or record.status in _ENDED:
        raise RunNotCancellable(run_id, str(record.status))
    try:
        await cancel_idle(deps, run_id, f"cancelled by {by}")
    except RunConflict:
        # A worker holds the run: record who asked, then wake the worker.
        if not await fleet.request_cancel(run_id, by, running=True):
            raise FleetError(
                f"run {run_id} is advanced by a process outside the fleet; cancel it there"
            ) from None
        return CancelOutcome.STOPPING
    # A worker picking the run's job now finds it cancelled, and leaves it.
    await fleet.request_cancel(run_id, by, running=False)
    return CancelOutcome.CANCELLED


async def cancel_idle(deps: Deps, run_id: str, reason: str) -> None:
    """Journal a run nobody advances as `cancelled`, read and written under its lease, so a
    process that took the run up meanwhile (a resume) is refused, not overwritten.

    `RunConflict` while another process holds the run; `RunNotCancellable` when it ended;
    `CancelReasonInvalid` for a `reason` that is no text or blank, before the lease."""
    _check_cancel_text("reason", reason)
    async with hold_lease(deps.leases, run_id):
        record = await deps.runtime.load_run(run_id)
        if record is None:
            raise UnknownRun(run_id)
        if record.status.final or record.status in _ENDED:
            raise RunNotCancellable(run_id, str(record.status))
        # Audited as any cancelled run is: its `run_completed`, kept with the end.
        await cancel_aside(deps, record, reason)


_ENDED = frozenset({RunStatus.CANCELLED, RunStatus.DEAD_LETTER})
