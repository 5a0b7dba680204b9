"""The fleet's queue: runs handed to workers through pgqueuer, a Postgres job queue.

The engine (pgqueuer) decides which worker advances which run and when: its jobs table, its
dequeue (`FOR UPDATE SKIP LOCKED`, priorities, `execute_after`), its heartbeats (a job whose
worker stopped beating is picked again), its NOTIFY wake-ups and cancellations. The run's
durable state stays in our journal; a job only says "advance run R" (start it, or resume it
with a person's answer: its payload, `agent.fleet_jobs`). Its tables live in the journal's
Postgres schema, beside one table of ours, `fleet_runs`: which job a run has now, and who
asked to cancel it.

pgqueuer is imported when a fleet is used (`pip install 'loomgraph[fleet]'`), not with
loomgraph.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from loomgraph.agent.answers import check_agent, check_owner

# The fleet's errors and its jobs' payload have their own modules; they are named here too,
# where workers (`workers.advance`), the resumer and tests import them from.
from loomgraph.agent.defaults import DEFAULT_QUEUE
from loomgraph.agent.fleet_errors import (
    FleetError,
    FleetNeedsPostgres,
    JobFromNewerVersion,
    JobUnusable,
)
from loomgraph.agent.fleet_jobs import JobKind, RunJob
from loomgraph.protocols import RunRecord, RunStatus, Runtime

__all__ = [
    "DEFAULT_QUEUE",
    "FleetError",
    "FleetNeedsPostgres",
    "FleetQueue",
    "FleetRun",
    "JobFromNewerVersion",
    "JobKind",
    "JobUnusable",
    "RunJob",
    "cancel_check",
    "check_run_agent",
    "fleet_queue",
    "fleet_run_of",
]


@dataclass(frozen=True, slots=True)
class FleetRun:
    """A run's row in `fleet_runs`: its current job, the agent that submitted it ("" when
    none was kept) and who asked to cancel it (None: nobody, or the cancel was overridden)."""

    job_id: int | None
    agent: str
    cancelled_by: str | None


@dataclass(frozen=True, slots=True)
class FleetQueue:
    """The queue of one journal: pgqueuer's tables and channel in the journal's schema."""

    runtime: Any  # a PostgresRuntime
    schema: str

    @property
    def channel(self) -> str:
        """The NOTIFY channel (database-wide, so named after the schema)."""
        return f"loomgraph.{self.schema}"

    def settings(self) -> Any:
        """pgqueuer's names: every object in the journal's schema."""
        from pgqueuer.domain.settings import DBSettings

        return DBSettings(db_schema=self.schema, channel=self.channel)

    def queries(self, connection: Any) -> Any:
        """pgqueuer's queries over one asyncpg connection (inside a transaction or not)."""
        from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
        from pgqueuer.adapters.persistence import qb
        from pgqueuer.queries import Queries

        settings = self.settings()
        return Queries(
            AsyncpgDriver(connection),
            qbe=qb.QueryBuilderEnvironment(settings=settings),
            qbq=qb.QueryQueueBuilder(settings=settings),
            qbs=qb.QuerySchedulerBuilder(settings=settings),
        )

    @property
    def runs_table(self) -> str:
        """Our table: each run's current job, its queue, and who asked to cancel it."""
        return f'"{self.schema}".fleet_runs'

    async def install(self) -> None:
        """Create the queue's tables when missing (once per database schema; safe to race)."""
        async with self.runtime.transaction() as con:
            # One installer at a time: two workers starting together must not both create.
            await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.channel)
            queries = self.queries(con)
            if not await queries.schema_is_installed():
                await queries.install(create_schema=False)
            await con.execute(
                f"CREATE TABLE IF NOT EXISTS {self.runs_table} (run_id TEXT PRIMARY KEY, "
                "job_id BIGINT, cancelled_by TEXT, cancelled_at DOUBLE PRECISION, queue TEXT)"
            )
            # A table made before runs kept their queue: those runs answer on DEFAULT_QUEUE.
            await con.execute(f"ALTER TABLE {self.runs_table} ADD COLUMN IF NOT EXISTS queue TEXT")
            # The agent that submitted the run (its record names none until it starts).
            await con.execute(f"ALTER TABLE {self.runs_table} ADD COLUMN IF NOT EXISTS agent TEXT")

    async def enqueue(
        self, con: Any, job: RunJob, *, queue: str, priority: int, delay: float | None
    ) -> int:
        """Enqueue `job` on `con` (the caller's transaction) and remember it as the run's job,
        and `queue` as the run's queue.

        At most one job per run waits or runs at a time (its dedupe key is the run id)."""
        from datetime import timedelta

        queries = self.queries(con)
        after = timedelta(seconds=delay) if delay else None
        ids = await queries.enqueue(queue, job.encode(), priority, after, dedupe_key=job.run_id)
        job_id = int(ids[0])
        await con.execute(
            f"INSERT INTO {self.runs_table} (run_id, job_id, queue, agent) "
            "VALUES ($1, $2, $3, NULLIF($4, '')) ON CONFLICT (run_id) DO UPDATE SET "
            "job_id = excluded.job_id, queue = excluded.queue, "
            f"agent = COALESCE(excluded.agent, {self.runs_table}.agent)",
            job.run_id,
            job_id,
            queue,
            job.agent,
        )
        return job_id

    async def run_queue(self, con: Any, run_id: str) -> str:
        """The queue the run's last job went to (DEFAULT_QUEUE when none is kept)."""
        found = await con.fetchval(f"SELECT queue FROM {self.runs_table} WHERE run_id = $1", run_id)
        return found or DEFAULT_QUEUE

    async def job_of(self, run_id: str) -> tuple[int | None, str | None]:
        """The run's current job id and who asked to cancel it (None, None: not a fleet run)."""
        async with self.runtime.transaction() as con:
            row = await con.fetchrow(
                f"SELECT job_id, cancelled_by FROM {self.runs_table} WHERE run_id = $1", run_id
            )
        return (None, None) if row is None else (row[0], row[1])

    async def fleet_run(self, run_id: str) -> FleetRun | None:
        """The run's row, or None: not a fleet run (or a journal never used by a fleet, whose
        schema has no `fleet_runs`). Only reads."""
        async with self.runtime.transaction() as con:
            if await con.fetchval("SELECT to_regclass($1)", self.runs_table) is None:
                return None
            row = await con.fetchrow(f"SELECT * FROM {self.runs_table} WHERE run_id = $1", run_id)
        if row is None:
            return None
        return FleetRun(row["job_id"], row.get("agent") or "", row["cancelled_by"])

    async def expired_approvals(self, agent: str, now: float, limit: int) -> list[str]:
        """Fleet runs of `agent` (or of no named agent) waiting for an approval whose
        request's deadline is before `now` (epoch seconds, the clock deadlines are set by),
        oldest first, at most `limit`."""
        async with self.runtime.transaction() as con:
            rows = await con.fetch(self.expired_query, agent, now, limit)
        return [row[0] for row in rows]

    @property
    def expired_query(self) -> str:
        """`expired_approvals`' query ($1 the agent, $2 now, $3 the limit): every worker
        looks every few seconds, so the waiting runs are read through the journal's partial
        index of them (`runtime.schema.waiting_runs_index`), not the whole `runs` table."""
        return (
            f'SELECT r.run_id FROM "{self.schema}".runs r JOIN {self.runs_table} f '
            f"USING (run_id) WHERE r.status = '{RunStatus.AWAITING_APPROVAL}' "
            "AND (f.agent IS NULL OR f.agent = $1) "
            "AND (r.result #>> '{pending,deadline}')::float8 < $2 ORDER BY r.n LIMIT $3"
        )

    async def pending_job(self, run_id: str) -> str | None:
        """The status of the run's job that waits (`queued`) or runs (`picked`): the one that
        holds the run's dedupe key. None when it has none."""
        row = await self._pending_row(run_id)
        return None if row is None else str(row["status"])

    async def pending_payload(self, run_id: str) -> bytes | None:
        """The payload of the run's job that waits or runs (None: none; an ended job has none)."""
        row = await self._pending_row(run_id)
        return None if row is None else bytes(row["payload"] or b"")

    async def _pending_row(self, run_id: str) -> Any:
        table = f'"{self.schema}".{self.settings().queue_table}'
        async with self.runtime.transaction() as con:
            return await con.fetchrow(
                f"SELECT status::text AS status, payload FROM {table} WHERE dedupe_key = $1 "
                "AND status IN ('queued', 'picked')",
                run_id,
            )

    async def cancel_requested(self, run_id: str) -> str | None:
        """Who asked to cancel the run and was not yet overridden (None: nobody)."""
        async with self.runtime.transaction() as con:
            found: str | None = await con.fetchval(
                f"SELECT cancelled_by FROM {self.runs_table} WHERE run_id = $1", run_id
            )
        return found

    async def forget_cancel(self, run_id: str) -> None:
        """Drop the run's cancel request: a person resumes the cancelled run (which the
        request ended), and so overrides it. Called under the run's lease."""
        async with self.runtime.transaction() as con:
            await con.execute(
                f"UPDATE {self.runs_table} SET cancelled_by = NULL, cancelled_at = NULL "
                "WHERE run_id = $1",
                run_id,
            )

    async def request_cancel(self, run_id: str, by: str, *, running: bool) -> bool:
        """Record who cancels the run, then tell the engine: a queued job is dropped (it
        never starts), a running one's worker is notified (it stops at its next effect).
        False when the run has no job (it was not submitted to the fleet)."""
        import time

        async with self.runtime.transaction() as con:
            job_id = await con.fetchval(
                f"UPDATE {self.runs_table} SET cancelled_by = $2, cancelled_at = $3 "
                "WHERE run_id = $1 RETURNING job_id",
                run_id,
                by,
                time.time(),
            )
            if job_id is None:
                return False
            queries = self.queries(con)
            if running:
                await queries.notify_job_cancellation([job_id])
            else:
                await queries.mark_job_as_cancelled([job_id])
        return True


async def fleet_run_of(runtime: Runtime, run_id: str) -> FleetRun | None:
    """The run's fleet row; None for a run not submitted to a fleet, or any journal but
    Postgres (which has no fleet)."""
    try:
        fleet = fleet_queue(runtime)
    except FleetNeedsPostgres:
        return None
    return await fleet.fleet_run(run_id)


async def check_run_agent(runtime: Runtime, record: RunRecord, agent_name: str) -> None:
    """`RunOfAnotherAgent` unless an Agent called `agent_name` may go on with the run. A run
    that never started names no agent in its record (`initial` is empty), so the agent that
    submitted it (its job's, kept in `fleet_runs.agent`) decides then."""
    check_agent(record, agent_name)
    if record.initial is None:
        found = await fleet_run_of(runtime, record.run_id)
        if found is not None:
            check_owner(record.run_id, found.agent, agent_name)


def cancel_check(fleet: FleetQueue, run_id: str) -> Callable[[], Awaitable[str | None]]:
    """A `stop_request` for a fleet run advanced outside a worker (an in-process resume, as
    `loomgraph runs approve` does): one indexed read of `fleet_runs` per effect boundary,
    where the engine asks it, so `agent.cancel` (which answers STOPPING while the run is
    held) stops the run there, as it stops a worker's."""

    async def check() -> str | None:
        by = await fleet.cancel_requested(run_id)
        return None if by is None else f"cancelled by {by}"

    return check


def fleet_queue(runtime: Runtime) -> FleetQueue:
    """The fleet queue of a journal; FleetNeedsPostgres for any journal but Postgres."""
    schema = getattr(runtime, "schema", None)
    if not hasattr(runtime, "start_run_with") or not isinstance(schema, str):
        raise FleetNeedsPostgres(
            f"a worker fleet needs the Postgres journal (runtime='postgres://…'), not "
            f"{type(runtime).__name__}: its queue lives in the same database, so that a run "
            "is journaled and enqueued in one transaction (submit, submit_resume and cancel "
            "are the fleet's; a run of agent.run stops when its task is cancelled)"
        )
    return FleetQueue(runtime, schema)
