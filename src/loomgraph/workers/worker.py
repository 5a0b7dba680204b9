"""`Worker`: one process of the fleet. pgqueuer's QueueManager picks jobs (priorities,
`run_at`, heartbeats, re-picking a job whose worker stopped beating, NOTIFY wake-ups,
cancellations); for each job the worker takes one of the user's slots and advances the run."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from loomgraph._storage.pg_pool import import_asyncpg
from loomgraph.agent.agent import Agent
from loomgraph.agent.checkpoints import ApprovalRefused, RunOfAnotherAgent
from loomgraph.agent.fleet import DEFAULT_QUEUE, FleetError, FleetQueue, RunJob, fleet_queue
from loomgraph.agent.leases import owner_is_dead
from loomgraph.engine.scope import stop_request
from loomgraph.errors import ServiceUnavailable
from loomgraph.protocols import RunStatus
from loomgraph.runtime.errors import LeaseLost, RunConflict
from loomgraph.workers.advance import advance
from loomgraph.workers.quarantine import Quarantine
from loomgraph.workers.slots import UserSlots

__all__ = ["Worker", "WorkerOptions"]

log = logging.getLogger("loomgraph.workers")


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

    def check(self) -> None:
        """FleetError naming the first option that cannot work."""
        if self.concurrency < 2:
            # pgqueuer picks jobs in batches (of one, here) and wants room for two.
            raise FleetError(f"concurrency must be at least 2, got {self.concurrency}")
        if not self.queues or any(not q for q in self.queues):
            raise FleetError(f"queues must be non-empty names, got {list(self.queues)}")
        if self.per_user < 0:
            raise FleetError(f"per_user must be >= 0, got {self.per_user}")
        if self.heartbeat_seconds <= 0 or self.poll_seconds <= 0:
            raise FleetError("heartbeat_seconds and poll_seconds must be > 0")


class Worker:
    """Takes runs of `agent`'s journal from the queue until `stop()`."""

    def __init__(self, agent: Agent, options: WorkerOptions | None = None) -> None:
        self.agent = agent
        self.options = options or WorkerOptions()
        self.options.check()
        self.fleet: FleetQueue = fleet_queue(agent.deps.runtime)
        runtime: Any = agent.deps.runtime
        self.slots = UserSlots(
            runtime.dsn,
            self.fleet.schema,
            self.options.per_user,
            connections=self.options.concurrency,
            expire_seconds=self.options.heartbeat_seconds,
        )
        self.quarantine = Quarantine()
        self._manager: Any = None
        self._stopping = False

    async def run(self, *, ready: Callable[[], Awaitable[None] | None] | None = None) -> None:
        """Take and advance jobs until `stop()`; the runs in hand are finished first."""
        from pgqueuer.domain.types import Channel
        from pgqueuer.qm import QueueManager

        await self.fleet.install()
        runtime: Any = self.agent.deps.runtime
        # pgqueuer's own connection: its LISTEN, dequeues, heartbeats and logs.
        asyncpg = import_asyncpg("loomgraph worker")
        connection = await asyncpg.connect(runtime.dsn, timeout=runtime.connect_timeout)
        try:
            manager = QueueManager(
                self.fleet.queries(connection), channel=Channel(self.fleet.channel)
            )
            for queue in self.options.queues:
                manager.entrypoint(queue, accepts_context=True)(self._handle)
            self._manager = manager
            if self._stopping:
                manager.shutdown.set()
            if ready is not None:
                done = ready()
                if done is not None:
                    await done
            opts = self.options
            await manager.run(
                dequeue_timeout=timedelta(seconds=opts.poll_seconds),
                batch_size=1,
                max_concurrent_tasks=opts.concurrency,
                heartbeat_timeout=timedelta(seconds=opts.heartbeat_seconds),
                log_aggregation_interval=timedelta(0),
            )
        finally:
            await self.slots.close()
            await connection.close()

    def stop(self) -> None:
        """Take no more jobs; `run` returns once the runs in hand finished."""
        self._stopping = True
        if self._manager is not None:
            self._manager.shutdown.set()

    async def _handle(self, job: Any, context: Any) -> None:
        """One job: a slot of the user's, the run advanced, the slot given back."""
        from pgqueuer.errors import RetryRequested

        work = RunJob.decode(job.payload)
        slot = await self.slots.take(work.user_id)
        if slot is None:
            # The user has K runs advancing: put the job back for a moment, longer each time
            # (up to 2 s), so a user with many waiting runs does not keep the workers busy.
            attempts = int(getattr(job, "attempts", 0) or 0)
            delay = min(self.options.slot_retry_seconds * 1.5 ** min(attempts, 10), 2.0)
            raise RetryRequested(timedelta(seconds=delay), "user busy")
        token = stop_request.set(self._stop_check(work.run_id, context))
        try:
            crashed = await self._crashed(work.run_id)
            async with self.quarantine.alone() if crashed else self.quarantine.shared():
                done = await advance(self.agent, self.fleet, work)
            log.info("run %s: %s", work.run_id, done)
        except LeaseLost:
            # Stopped past the lease; another worker has the run. The job goes back rather
            # than being marked done, so it survives if that worker dies too.
            raise RetryRequested(timedelta(seconds=self._lease_seconds()), "lease lost") from None
        except RunConflict as err:
            # Another live worker holds the run (this job was picked again while it was
            # slow, or it is on another host and its lease has not expired yet).
            wait = self._lease_seconds()
            if err.expires_at is not None:
                # expires_at is by the database clock; this host's is close enough here.
                wait = max(0.05, min(wait, err.expires_at - time.time()))
            raise RetryRequested(timedelta(seconds=wait), "run leased") from None
        except ApprovalRefused as err:
            # The answer this job brings settles nothing any more (its request was answered
            # meanwhile, or the run waits for another call now): nothing ran, the job is done.
            log.warning("run %s: the job's answer was not used: %s", work.run_id, err)
        except RunOfAnotherAgent as err:
            # A queue this worker's agent shares with another: the job goes back for a
            # worker of its own agent (docs/scaling.md: give each agent queues of its own).
            log.warning(
                "run %s: %s; the job is put back for a worker of that agent", err.run_id, err
            )
            raise RetryRequested(
                timedelta(seconds=self.options.poll_seconds), "another agent's run"
            ) from None
        except ServiceUnavailable:
            # The journal or the budget's ledger unreachable (Postgres restarting): try again
            # once it may be back; the run is where its journal left it.
            raise RetryRequested(
                timedelta(seconds=self.options.poll_seconds), "service unavailable"
            ) from None
        finally:
            stop_request.reset(token)
            await asyncio.shield(self.slots.release(slot))

    async def _crashed(self, run_id: str) -> bool:
        """True when the run is journaled `running` and nobody alive holds it: its worker
        died, and this job recovers it (a run a live worker holds is not one)."""
        runtime: Any = self.agent.deps.runtime
        record = await runtime.load_run(run_id)
        if record is None or record.status != RunStatus.RUNNING:
            return False
        lease = await runtime.lease(run_id)
        return lease is None or lease.expires_at <= time.time() or owner_is_dead(lease.owner)

    def _lease_seconds(self) -> float:
        return float(getattr(self.agent.deps.runtime, "lease_seconds", 30.0))

    def _stop_check(self, run_id: str, context: Any) -> Callable[[], Awaitable[str | None]]:
        """The run's `stop_request`: a cancel the engine told this worker of (a NOTIFY),
        with who asked read from the fleet's table."""

        async def check() -> str | None:
            if not context.cancellation.cancel_called:
                return None
            _, by = await self.fleet.job_of(run_id)
            return f"cancelled by {by}" if by else None

        return check
