"""What a worker fleet refuses: `FleetError`, and the errors of its queue (`agent.fleet`) and
of its jobs' payloads (`agent.fleet_jobs`). `agent.submitting` adds the errors of submitting,
waiting and cancelling."""

from __future__ import annotations

from loomgraph.errors import LoomgraphError

__all__ = ["FleetError", "FleetNeedsPostgres", "JobFromNewerVersion", "JobUnusable"]


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
