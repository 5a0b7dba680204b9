"""A lease renewal that fails because the journal cannot be reached (a network stall, a lock,
a slow server) is not a cancel by the run's caller: the run is never journaled `cancelled`.

- A renewal that fails while the lease is still live is tried again; when one goes through
  before the lease runs out, the run goes on as if nothing happened.
- When none does, the run is stopped (it may have lost the lease) without journaling
  anything: it stays `running`, its caller gets `JournalUnavailable`, a resume (or a fleet
  worker) recovers it.

In-process on both durable journals (SQLite: another connection holds the write lock past the
busy timeout; Postgres: a TCP proxy stalls every byte), and with a real `loomgraph worker`
process whose every connection goes through the stalling proxy.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import fault_agent
import pg
from fault_fleet import Workers, fleet_env
from loomgraph import Agent
from loomgraph.models import ScriptedModel
from loomgraph.protocols import EffectStatus, RunStatus
from loomgraph.runtime.errors import JournalUnavailable
from loomgraph.runtime.postgres import PostgresRuntime
from loomgraph.runtime.sqlite import SqliteRuntime
from stall_proxy import StallingProxy
from test_fleet import sql, until

pg_schema = pg.pg_schema
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
SCRIPT: list[Any] = [
    {"tool_calls": [{"tool": "lookup", "args": {"city": "Rome"}}]},
    "Rome has 3 million people",
]
RENEWAL_FAILED = "lease renewal of run"  # the warning a failed renewal logs


class Outage:
    """Makes the journal unreachable and reachable again, for a journal made by `runtime`."""

    def __init__(self, backend: str, tmp_path: Path, schema: str | None) -> None:
        self.backend, self.schema = backend, schema
        self.path = tmp_path / "journal.db"
        self.proxy: StallingProxy | None = None
        self.blocker: sqlite3.Connection | None = None

    def runtime(self, lease_seconds: float) -> Any:
        if self.backend == "sqlite":
            return SqliteRuntime(self.path, busy_timeout=0.2, lease_seconds=lease_seconds)
        url = urlsplit(pg.postgres_dsn())
        self.proxy = StallingProxy(url.hostname or "127.0.0.1", url.port or 5432)
        user = url.netloc.rpartition("@")[0]
        dsn = urlunsplit(url._replace(netloc=f"{user}@127.0.0.1:{self.proxy.port}"))
        return PostgresRuntime(
            dsn,
            schema=self.schema or "public",
            lease_seconds=lease_seconds,
            command_timeout=0.5,
            connect_timeout=0.5,
        )

    def begin(self) -> None:
        if self.proxy is not None:
            self.proxy.stall()
        else:
            self.blocker = sqlite3.connect(self.path, isolation_level=None)
            self.blocker.execute("BEGIN IMMEDIATE")  # the write lock, past the busy timeout

    def end(self) -> None:
        if self.proxy is not None:
            self.proxy.flow()
        elif self.blocker is not None:
            self.blocker.execute("ROLLBACK")
            self.blocker.close()
            self.blocker = None

    def close(self) -> None:
        self.end()
        if self.proxy is not None:
            self.proxy.cut()


@pytest.fixture(params=BACKENDS)
def outage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outage]:
    schema = request.getfixturevalue("pg_schema") if request.param == "postgres" else None
    made = Outage(request.param, tmp_path, schema)
    yield made
    made.close()


class Renewals:
    """Counts the lease renewals of a journal, and tells when one failed."""

    def __init__(self, runtime: Any) -> None:
        self.failed = asyncio.Event()
        self.renewed_after_failure = asyncio.Event()
        self.failures = 0
        self.after_failure = 0  # renewals that went through after one failed
        renew = runtime.renew_lease

        async def counted(*args: Any, **kw: Any) -> Any:
            try:
                lease = await renew(*args, **kw)
            except BaseException:
                self.failures += 1
                self.failed.set()
                raise
            if self.failures:
                self.after_failure += 1
                self.renewed_after_failure.set()
            return lease

        runtime.renew_lease = counted


def _agent(runtime: Any, lookup: Any) -> Agent:
    return Agent("x", model=ScriptedModel(SCRIPT), tools=[lookup], runtime=runtime)


async def _record(runtime: Any) -> Any:
    [record] = await runtime.runs()
    return record


async def test_a_renewal_that_fails_while_the_journal_is_out_is_tried_again(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = outage.runtime(lease_seconds=6.0)
    renewals = Renewals(runtime)
    executed: list[str] = []

    async def lookup(city: str) -> str:
        """Look a city up (the journal is out until a lease renewal failed)."""
        executed.append(city)
        outage.begin()
        try:
            await renewals.failed.wait()
        finally:
            outage.end()
        await renewals.renewed_after_failure.wait()  # the lease held on, renewed again
        return f"{city}: 3 million"

    agent = _agent(runtime, lookup)
    try:
        async with asyncio.timeout(60):
            result = await agent.run("How many people live in Rome?")
        record = await _record(runtime)
    finally:
        await agent.aclose()
    assert renewals.failures >= 1 and renewals.after_failure >= 1  # failed, then went through
    assert result.status == RunStatus.COMPLETED and result.output == SCRIPT[-1]
    assert (record.status, record.reason) == (RunStatus.COMPLETED, "")
    assert executed == ["Rome"]  # never stopped: the tool ran once
    assert RENEWAL_FAILED in caplog.text


async def test_a_journal_out_until_the_lease_runs_out_leaves_the_run_running(
    outage: Outage,
) -> None:
    runtime = outage.runtime(lease_seconds=3.0)
    renewals = Renewals(runtime)
    executed: list[str] = []

    async def lookup(city: str) -> str:
        """Look a city up (the first time, the journal is out until the run is stopped)."""
        executed.append(city)
        if len(executed) == 1:
            outage.begin()
            try:
                await asyncio.Event().wait()  # until the lease holder stops the run
            finally:
                outage.end()
        return f"{city}: 3 million"

    agent = _agent(runtime, lookup)
    try:
        with pytest.raises(JournalUnavailable):
            async with asyncio.timeout(60):
                await agent.run("How many people live in Rome?")
        record = await _record(runtime)
        # Not "cancelled by the caller": nothing was journaled; the run is where a crash
        # would have left it, its tool call begun.
        assert (record.status, record.reason) == (RunStatus.RUNNING, "")
        [effect] = [e for e in await runtime.effects(record.run_id) if e.kind == "tool"]
        assert effect.status == EffectStatus.PENDING
        resumed = await agent.resume(record.run_id)
    finally:
        await agent.aclose()
    assert renewals.failures >= 1
    assert resumed.status == RunStatus.COMPLETED and resumed.output == SCRIPT[-1]
    assert executed == ["Rome", "Rome"]  # the cut-off call, again with its key


async def test_a_cancel_by_the_caller_is_still_journaled(tmp_path: Path) -> None:
    inside = asyncio.Event()

    async def lookup(city: str) -> str:
        """Never answers."""
        inside.set()
        await asyncio.Event().wait()
        return city

    runtime = SqliteRuntime(tmp_path / "journal.db", lease_seconds=3.0)
    agent = _agent(runtime, lookup)
    try:
        task = asyncio.create_task(agent.run("How many people live in Rome?"))
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        record = await _record(runtime)
    finally:
        await agent.aclose()
    assert (record.status, record.reason) == (RunStatus.CANCELLED, "cancelled by the caller")


# --------------------------------------------------------------------------- a fleet worker


async def _logged(fleet: Workers, worker: Any, text: str, at_most: float) -> bool:
    """Whether the worker logged `text` within `at_most` seconds (not failing when not)."""
    deadline = asyncio.get_running_loop().time() + at_most
    while text not in fleet.log(worker):
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


# lease seconds, command_timeout, the longest stall, how long the slow tool call takes (ms),
# whether the stall ends as soon as the worker logs a failed renewal, recoveries expected.
STALLS = {
    # Renewed every 5 s, each statement given 2 s: a stall of at most 8 s makes a renewal
    # fail; it ends when the worker reports that, well before the lease can run out. The
    # slow call outlasts the stall by far (20 s): an outcome journaled into the stall would
    # time out and have the run recovered, which is the other case, not this one.
    "short": (15.0, "2", 8.0, "20000", True, 0),
    # The lease (3 s) runs out during the stall: the worker stops the run, puts the job back
    # and a worker recovers the run (once).
    "past_the_lease": (3.0, "1", 4.5, "6000", False, 1),
}


@pytest.mark.postgres
@pytest.mark.parametrize("stall", list(STALLS))
async def test_a_network_stall_never_cancels_a_fleet_run(
    pg_schema: str, tmp_path: Path, stall: str, restore_env: None
) -> None:
    lease, command_timeout, seconds, slow_ms, end_on_failure, recoveries = STALLS[stall]
    env = await fleet_env(
        pg_schema,
        tmp_path,
        FLEET_LEASE=str(lease),
        FLEET_SLOW_MS=slow_ms,
        FLEET_COMMAND_TIMEOUT=command_timeout,
    )
    agent = fault_agent.make()  # the test's own agent: straight to the server
    url = urlsplit(pg.postgres_dsn())
    with StallingProxy(url.hostname or "127.0.0.1", url.port or 5432) as proxy:
        user = url.netloc.rpartition("@")[0]
        through = urlunsplit(url._replace(netloc=f"{user}@127.0.0.1:{proxy.port}"))
        args = ("--heartbeat", "10", "--poll", "0.5", "--concurrency", "2")
        fleet = Workers({**env, "FLEET_DSN": through}, tmp_path, *args, "--log-level", "warning")
        worker = fleet.start()
        try:
            run_id = await agent.submit("one slow run", user_id="u")
            slow, quick = f"{run_id}:tools:1:1", f"{run_id}:tools:1:2"

            async def in_the_slow_call() -> bool:
                effects = {e.key: e.status for e in await agent.deps.runtime.effects(run_id)}
                return effects.get(quick) == EffectStatus.DONE and slow in effects

            await until("the slow tool call to run", in_the_slow_call, 60)
            proxy.stall()
            if end_on_failure:  # as soon as the worker reports a failed renewal, or at most
                await _logged(fleet, worker, RENEWAL_FAILED, seconds)
            else:
                await asyncio.sleep(seconds)  # the fault: how long the network stands still
            proxy.flow()
            done = await agent.wait(run_id, timeout=120)
            record = await agent.deps.runtime.load_run(run_id)
            effects = await agent.deps.runtime.effects(run_id)
        finally:
            fleet.stop()
            await agent.aclose()
        log = fleet.log(worker)
    assert (done.status, done.reason) == (RunStatus.COMPLETED, ""), log[-3000:]
    assert RENEWAL_FAILED in log, log[-3000:]  # the stall did hit a renewal
    assert record.status == RunStatus.COMPLETED and record.recoveries == recoveries, log[-3000:]
    tools = sorted(e.key for e in effects if e.kind == "tool")
    ledger = await sql(f"SELECT key FROM {pg_schema}.ledger WHERE run_id = $1", run_id)
    assert sorted(r[0] for r in ledger) == tools and len(tools) == 3  # once per key
