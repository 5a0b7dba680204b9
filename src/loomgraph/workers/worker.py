"""`Worker`: one process of the fleet. pgqueuer's QueueManager picks jobs (priorities,
`run_at`, heartbeats, re-picking a job whose worker stopped beating, NOTIFY wake-ups,
cancellations); for each job the worker takes one of the user's slots and advances the run."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from loomgraph._storage.pg_pool import import_asyncpg
from loomgraph.agent.agent import Agent
from loomgraph.agent.answers import check_owner
from loomgraph.agent.checkpoints import ApprovalRefused, RunOfAnotherAgent
from loomgraph.agent.fleet import FleetQueue, fleet_queue
from loomgraph.agent.fleet_errors import JobFromNewerVersion, JobUnusable
from loomgraph.agent.fleet_jobs import RunJob
from loomgraph.agent.leases import owner_is_dead
from loomgraph.agent.repeating import repeat
from loomgraph.engine.scope import stop_request
from loomgraph.errors import ServiceUnavailable
from loomgraph.protocols import RunStatus
from loomgraph.runtime.errors import LeaseLost, RunConflict
from loomgraph.runtime.postgres import dialect as postgres_dialect
from loomgraph.workers.advance import advance_run, fail_unstarted
from loomgraph.workers.expiry import send_on_expired
from loomgraph.workers.options import WorkerOptions
from loomgraph.workers.quarantine import Quarantine
from loomgraph.workers.slots import UserSlots

__all__ = ["Worker", "WorkerOptions"]

log = logging.getLogger("loomgraph.workers")

# A job of a newer loomgraph is put back for this long at most (poll_seconds at first).
_NEWER_VERSION_RETRY_MAX = 30.0
# The journal's clock: the Postgres dialect's `now`, which leases are written with.
_NOW = f"SELECT {postgres_dialect('public').now}"


class _PutBack(Exception):
    """The job cannot go on now: back in the queue for `seconds`."""

    def __init__(self, seconds: float, why: str) -> None:
        super().__init__(why)
        self.seconds, self.why = seconds, why


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
        # A recovery turned away keeps this worker for itself for longer than it stays out
        # of the queue (`slot_retry_seconds`, then up to a poll until it is picked again):
        # it comes back to an empty worker unless a free one ran it first.
        opts = self.options
        self.quarantine = Quarantine(hold_seconds=2 * (opts.slot_retry_seconds + opts.poll_seconds))
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
            # Runs nobody answered in time are sent on by the workers (`workers.expiry`).
            swept = asyncio.Event()
            expire = functools.partial(send_on_expired, self.agent, self.fleet)
            sweep = asyncio.create_task(repeat(expire, opts.expiry_seconds, swept, log))
            try:
                await manager.run(
                    dequeue_timeout=timedelta(seconds=opts.poll_seconds),
                    batch_size=1,
                    max_concurrent_tasks=opts.concurrency,
                    heartbeat_timeout=timedelta(seconds=opts.heartbeat_seconds),
                    log_aggregation_interval=timedelta(0),
                )
            finally:
                swept.set()
                await sweep
        finally:
            await self.slots.close()
            await connection.close()

    def stop(self) -> None:
        """Take no more jobs; `run` returns once the runs in hand finished."""
        self._stopping = True
        if self._manager is not None:
            self._manager.shutdown.set()

    async def _handle(self, job: Any, context: Any) -> None:
        """One job: its run advanced, or the job put back (`RetryRequested`) when it cannot
        go on now; a job no worker can use fails its run, if it never started."""
        from pgqueuer.errors import RetryRequested

        def put_back(seconds: float, why: str) -> RetryRequested:
            return RetryRequested(timedelta(seconds=seconds), why)

        run_id: str | None = None
        try:
            try:
                work = RunJob.decode(job.payload)
            except JobUnusable as err:
                await self._reject(job, err)
                return
            run_id = work.run_id
            await self._advance(job, context, work)
        except _PutBack as back:
            raise put_back(back.seconds, back.why) from None
        except JobFromNewerVersion as err:
            # Written by a newer loomgraph (a rolling deploy: its servers went first): back
            # to the queue for a worker of that version; the run waits `queued` meanwhile.
            delay = self._backoff(job, self.options.poll_seconds, _NEWER_VERSION_RETRY_MAX)
            log.warning("job %s: %s; put back for a newer worker (in %.1f s)", job.id, err, delay)
            raise put_back(delay, "written by a newer loomgraph") from None
        except LeaseLost as err:
            # Stopped past the lease; another worker has the run. The job goes back rather
            # than being marked done, so it survives if that worker dies too. Said: an
            # operator sees that this worker was taken over (paused, starved of CPU).
            log.warning("%s: another worker took the run over", err)
            raise put_back(self._lease_seconds(), "lease lost") from None
        except RunConflict as err:
            # Another live worker holds the run (this job was picked again while it was
            # slow, or it is on another host and its lease has not expired yet).
            raise put_back(await self._until_free(err), "run leased") from None
        except ApprovalRefused as err:
            # The answer this job brings settles nothing any more (its request was answered
            # meanwhile, or the run waits for another call now): nothing ran, the job is done.
            log.warning("run %s: the job's answer was not used: %s", run_id, err)
        except RunOfAnotherAgent as err:
            # A queue this worker's agent shares with another: the job goes back for a
            # worker of its own agent (docs/scaling.md: give each agent queues of its own).
            log.warning(
                "run %s: %s; the job is put back for a worker of that agent", err.run_id, err
            )
            raise put_back(self.options.poll_seconds, "another agent's run") from None
        except ServiceUnavailable:
            # The journal, the budget's ledger or the per-user slots unreachable (Postgres
            # restarting, refusing connections): try again once it may be back; the run is
            # where its journal left it.
            raise put_back(self.options.poll_seconds, "service unavailable") from None
        except Exception as err:
            # Anything else: a run that never started would wait `queued` with no job (the
            # engine drops a job that raised), so it is failed with the error as its reason;
            # one that started and is left `running` goes back, to be recovered as after a
            # crash (counted: `max_recoveries` gives it up), never left with no job.
            status = None if run_id is None else await self._status_of(run_id)
            if status == RunStatus.RUNNING:
                log.exception("run %s: its job raised; put back to recover the run", run_id)
                raise put_back(
                    self._backoff(job, self.options.poll_seconds, 2.0), "raised"
                ) from None
            if run_id is None or status != RunStatus.QUEUED:
                raise  # (or the engine journaled what became of the run)
            if not await self._fail_quietly(run_id, err):
                raise
            log.exception("run %s: its job failed before the run started", run_id)

    async def _advance(self, job: Any, context: Any, work: RunJob) -> None:
        """The run of `work` advanced, a recovery alone: `_PutBack` when the quarantine or
        the user's slots keep it from going on now."""
        crashed = await self._crashed(work.run_id)
        gate = self.quarantine.alone() if crashed else self.quarantine.shared()
        with gate as entered:
            if not entered:
                # A recovery waits for this worker to empty (or, a recovery itself, runs
                # are in hand): another worker may be free, so the job goes back at once
                # rather than be held here, picked. A recovery comes back soon (a worker
                # kept for it is empty meanwhile); an ordinary job later each time.
                if crashed:
                    raise _PutBack(self.options.slot_retry_seconds, "runs in hand")
                delay = self._backoff(job, self.options.slot_retry_seconds, 2.0)
                raise _PutBack(delay, "a recovery goes first")
            slot = await self.slots.take(work.user_id)
            if slot is None:
                # The user has K runs advancing: put the job back for a moment, longer each
                # time (up to 2 s), so a user with many waiting runs does not keep the
                # workers busy.
                delay = self._backoff(job, self.options.slot_retry_seconds, 2.0)
                raise _PutBack(delay, "user busy")
            token = stop_request.set(self._stop_check(work.run_id, context))
            try:
                done = await advance_run(self.agent, self.fleet, work)
                # What the run ended in, not only what the job did: a run this job failed or
                # gave up is a warning (the default level), with its reason.
                level = logging.WARNING if done.gone_wrong else logging.INFO
                log.log(level, "run %s: %s", work.run_id, done)
            finally:
                stop_request.reset(token)
                await asyncio.shield(self.slots.release(slot))

    def _backoff(self, job: Any, first: float, most: float) -> float:
        """`first`, half as long again for each time the job was put back, up to `most`."""
        attempts = int(getattr(job, "attempts", 0) or 0)
        return min(first * 1.5 ** min(attempts, 20), most)

    async def _reject(self, job: Any, err: JobUnusable) -> None:
        """A job no worker can use: its run, when it never started, is journaled failed with
        `err` as the reason (nothing else would start it: this job is its only one). The run
        is the one `fleet_runs` names for this job, not what its payload may say."""
        async with self.fleet.runtime.transaction() as con:
            row = await con.fetchrow(
                f"SELECT run_id, agent FROM {self.fleet.runs_table} WHERE job_id = $1", job.id
            )
        if row is None:
            log.warning("job %s: %s; it is no run's job any more: dropped", job.id, err)
            return
        run_id = row["run_id"]
        check_owner(run_id, row["agent"] or "", self.agent.name)  # RunOfAnotherAgent
        if not await fail_unstarted(self.agent, run_id, err):
            log.warning("run %s: job %s dropped, the run is not queued: %s", run_id, job.id, err)

    async def _status_of(self, run_id: str) -> RunStatus | None:
        """The run's journaled status (None when it cannot be read, or there is no run)."""
        try:
            record = await self.agent.deps.runtime.load_run(run_id)
        except Exception as failed:
            log.warning("run %s could not be read: %s", run_id, failed)
            return None
        return None if record is None else record.status

    async def _fail_quietly(self, run_id: str, err: Exception) -> bool:
        """`fail_unstarted` for an unexpected error, for a run found `queued`; False when the
        journal could not be written."""
        try:
            return await fail_unstarted(self.agent, run_id, err)
        except Exception as failed:
            log.warning("run %s could not be journaled failed: %s", run_id, failed)
            return False

    async def _crashed(self, run_id: str) -> bool:
        """True when the run is journaled `running` and nobody alive holds it: its worker
        died, and this job recovers it (a run a live worker holds is not one). Whether the
        lease expired is judged by the database's clock, which every worker shares."""
        runtime: Any = self.agent.deps.runtime
        record = await runtime.load_run(run_id)
        if record is None or record.status != RunStatus.RUNNING:
            return False
        lease = await runtime.lease(run_id)
        if lease is None or owner_is_dead(lease.owner):
            return True
        return bool(lease.expires_at <= await self._database_now())

    async def _until_free(self, err: RunConflict) -> float:
        """How long until the lease another worker holds expires, by the database's clock
        (at most `lease_seconds`: it may be renewed meanwhile)."""
        wait = self._lease_seconds()
        if err.expires_at is not None:
            try:
                wait = min(wait, err.expires_at - await self._database_now())
            except Exception as failed:  # the journal went away: the whole lease, then
                log.warning("run %s: no database clock: %s", err.run_id, failed)
        return max(0.05, wait)

    async def _database_now(self) -> float:
        """The database's clock in epoch seconds, as the journal writes leases with it."""
        async with self.fleet.runtime.transaction() as con:
            return float(await con.fetchval(_NOW))

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
