"""What a worker fleet refuses: `FleetError`, and the errors of its queue (`agent.fleet`) and
of its jobs' payloads (`agent.fleet_jobs`), and an answer the run's queued job stands in
front of (`RunJobPending`: `submit_resume`, and a resume by hand). `agent.submitting` adds
the errors of submitting, waiting and cancelling."""

from __future__ import annotations

from loomgraph.errors import LoomgraphError

__all__ = [
    "FleetError",
    "FleetNeedsPostgres",
    "JobFromNewerVersion",
    "JobUnusable",
    "RunJobPending",
]


class FleetError(LoomgraphError):
    """Something a worker fleet was asked to do cannot be done (the message says why)."""


class FleetNeedsPostgres(FleetError, TypeError):
    """A fleet needs the Postgres journal: its queue lives in the same database, so a run is
    journaled and enqueued in one transaction."""


class JobUnusable(FleetError):
    """A job no worker can use: its payload is not one any loomgraph version writes (not
    JSON, no run id, a field of the wrong type), or it names what this worker cannot import
    (its output schema's module). The worker journals the run `failed`, with this error as
    its reason (`JobUnusable: ...`), when the run never started (docs/scaling.md, "Jobs a
    worker cannot use")."""


class JobFromNewerVersion(FleetError):
    """A job a newer loomgraph wrote: a field or a kind this version does not know. A worker
    of this version puts it back in the queue for a worker that reads it, and the run waits
    `queued` meanwhile (docs/scaling.md, "Jobs a worker cannot use")."""


class RunJobPending(FleetError):
    """The run has a job in the queue already (at most one per run): an answer given before
    this one and not yet taken by a worker, or the job a worker is still working on. Nothing
    was enqueued; the run is as it was."""

    def __init__(self, run_id: str, job_status: str) -> None:
        if job_status == "queued":
            why = "an answer given before this one is queued for it and no worker took it yet"
        else:
            why = "a worker is still working on its job"
        super().__init__(
            f"run {run_id} cannot take this answer now: {why}; wait for the run (agent.wait, "
            "or follow its events) and answer again if it still waits"
        )
        self.run_id, self.job_status = run_id, job_status
