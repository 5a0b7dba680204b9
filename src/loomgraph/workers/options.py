"""`WorkerOptions`: how one worker of the fleet takes jobs, and the one check of them
(`WorkerOptions.check`) that the worker, and so `loomgraph worker`, refuses bad options by
before it says it is ready."""

from __future__ import annotations

from dataclasses import dataclass

from loomgraph._storage.seconds import checked_seconds
from loomgraph.agent.fleet import DEFAULT_QUEUE
from loomgraph.agent.fleet_errors import FleetError

__all__ = ["MAX_SECONDS", "WorkerOptionInvalid", "WorkerOptions"]

# The longest duration an option may give: longer ones mean nothing for a worker, and
# past ~24 days Postgres refuses the slots' `idle_session_timeout` (an int of ms), past
# ~2.7 million years pgqueuer's `timedelta` overflows.
MAX_SECONDS = 86400.0


class WorkerOptionInvalid(FleetError, ValueError):
    """A worker option that cannot work (the message names it)."""


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How one worker takes jobs (docs/scaling.md, "Sizing")."""

    concurrency: int = 8  # runs this worker advances at once
    queues: tuple[str, ...] = (DEFAULT_QUEUE,)
    per_user: int = 0  # at most this many runs of one user advance at once, fleet-wide; 0: any
    # A job whose worker has not beaten for this long is picked again by another worker.
    heartbeat_seconds: float = 10.0
    # How often an idle worker looks at the queue without a NOTIFY (a stale job sends none).
    poll_seconds: float = 1.0
    # When the user's slots are all taken, the job is put back for this long (growing by
    # half with each time it was put back, up to 2 s).
    slot_retry_seconds: float = 0.2
    # How often the worker looks for runs waiting on an approval request whose deadline
    # passed, and sends them on (the call denied as timed out).
    expiry_seconds: float = 5.0

    def check(self) -> None:
        """WorkerOptionInvalid (a FleetError) naming the first option that cannot work."""
        # pgqueuer picks jobs in batches (of one, here) and wants room for two.
        _count("concurrency", self.concurrency, least=2)
        _count("per_user", self.per_user, least=0)
        # NaN passes `<= 0`, and infinity or NaN would stop the worker only once it said
        # it is ready.
        for name in ("heartbeat_seconds", "poll_seconds", "slot_retry_seconds", "expiry_seconds"):
            checked_seconds(name, getattr(self, name), error=WorkerOptionInvalid, most=MAX_SECONDS)
        _queue_names(self.queues)


def _count(name: str, value: object, *, least: int) -> None:
    """WorkerOptionInvalid unless `value` is an int (a bool is none) of at least `least`: a float
    would fail every run a worker takes (`range(1.5)` in the slots), not the worker."""
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise WorkerOptionInvalid(f"{name} must be at least {least} (an int), got {value!r}")


def _queue_names(queues: object) -> None:
    """WorkerOptionInvalid unless `queues` is a tuple (or list) of non-empty names, each given once:
    a bare str would be read as one queue per letter, and pgqueuer refuses a queue twice."""
    if isinstance(queues, str):
        raise WorkerOptionInvalid(
            f"queues must be a tuple of queue names, not the str {queues!r} "
            f"(one queue: ({queues!r},))"
        )
    if not isinstance(queues, tuple | list):
        raise WorkerOptionInvalid(f"queues must be a tuple of queue names, got {queues!r}")
    if not queues or any(not isinstance(q, str) or not q for q in queues):
        raise WorkerOptionInvalid(f"queues must be non-empty names, got {list(queues)!r}")
    seen: set[str] = set()
    for queue in queues:
        if queue in seen:
            raise WorkerOptionInvalid(f"queue {queue!r} is named twice in queues {list(queues)!r}")
        seen.add(queue)
