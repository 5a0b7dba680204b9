"""The worker fleet with real processes on the Postgres server: `loomgraph worker`
subprocesses take submitted runs from the queue (pgqueuer) and advance them.

The agent is `tests/fleet_agent.py` (its docstring says what its tools write). Scaled down from
the issue's 300 runs to keep CI fast (docs/decisions.md); the checks are the same.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import fleet_agent
import pg
from loomgraph.agent.checkpoints import ResumeError
from loomgraph.agent.fleet import FleetError, FleetNeedsPostgres
from loomgraph.agent.resuming import RunQueued
from loomgraph.agent.submitting import CancelOutcome, RunNotCancellable, RunWaitTimeout
from loomgraph.protocols import RunStatus, UnknownRun
from loomgraph.runtime.sqlite import SqliteRuntime

pytestmark = pytest.mark.postgres

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"
LEASE = 2.0  # journal lease seconds in these tests
HEARTBEAT = 2.0  # a job whose worker has not beaten for this long is picked again


class Fleet:
    """`loomgraph worker` subprocesses on one schema; each prints a ready line first."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str) -> None:
        self.env, self.cwd, self.args = env, cwd, args
        self.procs: list[subprocess.Popen[str]] = []
        self.lines: queue.Queue[tuple[int, str]] = queue.Queue()

    def start(self, extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:
        """Start one worker and wait (bounded) until it takes jobs."""
        cmd = [sys.executable, "-m", "loomgraph.cli.main", "worker", "--agent", "fleet_agent:make"]
        proc = subprocess.Popen(
            [*cmd, *self.args, *extra],
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.procs.append(proc)

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.lines.put((proc.pid, line.strip()))

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + 60
        while True:
            pid, line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if pid == proc.pid and line.endswith("ready"):
                return proc
            assert time.monotonic() < deadline, "worker did not get ready"

    def alive(self) -> list[subprocess.Popen[str]]:
        return [p for p in self.procs if p.poll() is None]

    def stop(self) -> None:
        """SIGTERM (after SIGCONT) every worker left; each must exit 0 within the timeout."""
        for proc in self.alive():
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
                raise


@pytest.fixture
def env(pg_schema: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of the test and of its workers, and the ledger tables."""
    dsn = pg.postgres_dsn()
    values = {
        "FLEET_DSN": dsn,
        "FLEET_SCHEMA": pg_schema,
        "FLEET_LEASE": str(LEASE),
        "FLEET_TURN_MS": "20",
        "FLEET_MAX_RECOVERIES": "2",
        "PYTHONPATH": f"{SRC}:{TESTS}",
    }
    for ddl in fleet_agent.LEDGER_DDL:
        pg._run_sql(ddl.format(s=pg_schema))
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    yield dict(os.environ)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


pg_schema = pg.pg_schema


@pytest.fixture
def agent(env: dict[str, str]) -> Any:
    """The test's Agent on the fleet's journal (its pool belongs to the test's event loop,
    closed with it)."""
    return fleet_agent.make()


def fleet(env: dict[str, str], tmp_path: Path, *args: str) -> Fleet:
    base = ("--heartbeat", str(HEARTBEAT), "--poll", "0.5", "--log-level", "warning")
    return Fleet(env, tmp_path, *base, *args)


async def until(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Poll `check` (sync or async) until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def sql(query: str, *args: Any) -> list[Any]:
    import asyncpg

    con = await asyncpg.connect(pg.postgres_dsn())
    try:
        return list(await con.fetch(query, *args))
    finally:
        await con.close()


# --------------------------------------------------------------------------- bad inputs


async def test_a_fleet_needs_the_postgres_journal(tmp_path: Path) -> None:
    from loomgraph import Agent

    for runtime in (SqliteRuntime(str(tmp_path / "j.db")), None):
        agent = Agent("x", model="echo", runtime=runtime)
        with pytest.raises(FleetNeedsPostgres, match="needs the Postgres journal"):
            await agent.submit("hi")
        with pytest.raises(FleetNeedsPostgres):
            await agent.wait("nope", timeout=1)
        await agent.aclose()


async def test_bad_inputs_get_typed_errors(agent: Any, pg_schema: str) -> None:
    with pytest.raises(UnknownRun):
        await agent.wait("no-such-run", timeout=1)
    with pytest.raises(UnknownRun):
        await agent.cancel("no-such-run")
    with pytest.raises(UnknownRun):
        await agent.submit_resume("no-such-run", approve=True)

    class Local:  # not importable by a worker
        pass

    with pytest.raises(FleetError, match="module level"):
        await agent.submit("x", output_schema=Local)
    with pytest.raises(FleetError, match="time zone"):
        await agent.submit("x", run_at=datetime(2030, 1, 1))
    with pytest.raises(FleetError, match="exactly one"):
        await agent.submit_resume("no-such-run")
    assert await agent.runs() == []  # nothing was journaled by the refused submits

    run_id = await agent.submit("no worker runs me", user_id="u")
    record = await agent.deps.runtime.load_run(run_id)
    assert record.status == RunStatus.QUEUED and record.user_id == "u"
    with pytest.raises(RunWaitTimeout, match="queued") as waited:
        await agent.wait(run_id, timeout=0.3)
    assert isinstance(waited.value, TimeoutError)
    with pytest.raises(RunQueued):
        await agent.resume(run_id)
    with pytest.raises(ResumeError, match="not waiting for an approval"):
        await agent.submit_resume(run_id, approve=True)
    assert await agent.cancel(run_id, by="alice") == CancelOutcome.CANCELLED
    record = await agent.deps.runtime.load_run(run_id)
    assert (record.status, record.reason) == (RunStatus.CANCELLED, "cancelled by alice")
    with pytest.raises(RunNotCancellable, match="cancelled"):
        await agent.cancel(run_id)
    jobs = await sql(f"SELECT count(*) FROM {pg_schema}.pgqueuer")
    assert jobs[0][0] == 0  # the cancelled run's job is gone: it never starts


async def test_submit_journals_and_enqueues_in_one_transaction(
    agent: Any, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loomgraph.agent import fleet as fleet_module

    real = fleet_module.FleetQueue.enqueue

    async def enqueue_then_fail(self: Any, con: Any, job: Any, **kw: Any) -> int:
        await real(self, con, job, **kw)  # the job row is written in the transaction...
        raise RuntimeError("the enqueue failed after writing")

    await agent.submit("first, to install the queue")
    monkeypatch.setattr(fleet_module.FleetQueue, "enqueue", enqueue_then_fail)
    with pytest.raises(RuntimeError, match="enqueue failed"):
        await agent.submit("never journaled")
    # ...and rolled back with the run: no run without its job, no job without its run.
    assert [r.initial for r in await agent.runs()] == [None]
    assert (await sql(f"SELECT count(*) FROM {pg_schema}.pgqueuer"))[0][0] == 1


# --------------------------------------------------------------------------- one worker


async def test_priorities_run_at_and_cancelling_a_running_run(
    agent: Any, env: dict[str, str], tmp_path: Path, pg_schema: str
) -> None:
    cancelled_queued = await agent.submit("cancelled before any worker", user_id="q")
    assert await agent.cancel(cancelled_queued, by="ops") == CancelOutcome.CANCELLED
    low = [await agent.submit(f"low {i}", user_id=f"l{i}") for i in range(4)]
    high = await agent.submit("high", user_id="h", priority=10)
    later_at = datetime.now(UTC) + timedelta(seconds=1.5)
    later = await agent.submit("later", user_id="t", priority=20, run_at=later_at)
    workers = fleet(env, tmp_path, "--concurrency", "2")
    workers.start()
    try:
        results = {r: await agent.wait(r, timeout=60) for r in [*low, high, later]}
        assert {r.status for r in results.values()} == {RunStatus.COMPLETED}
        first = {run_id: min(t) for run_id, t in await _first_ledger_times(pg_schema)}
        # The high-priority run was among the first two started (two slots), before the
        # low ones that were submitted before it; `later` did not start before its time.
        order = sorted([*low, high], key=lambda r: first[r])
        assert high in order[:2]
        assert first[later] >= later_at.timestamp()

        slow = await agent.submit("slow one", user_id="s")
        await until("the slow run's first tool call", lambda: _running_tool(agent, slow), 30)
        assert await agent.cancel(slow, by="tester") == CancelOutcome.STOPPING
        stopped = await agent.wait(slow, timeout=30)
        assert (stopped.status, stopped.reason) == (RunStatus.CANCELLED, "cancelled by tester")
        effects = await agent.deps.runtime.effects(slow)
        # The calls in flight finished and were journaled; nothing began after the cancel.
        assert effects and all(e.status == "done" for e in effects)
        assert [e.kind for e in effects].count("model") == 1
        keys = {r[0] for r in await sql(f"SELECT key FROM {pg_schema}.ledger")}
        assert not any(k.startswith(cancelled_queued) for k in keys)  # never started
        record = await agent.deps.runtime.load_run(cancelled_queued)
        assert record.status == RunStatus.CANCELLED
    finally:
        workers.stop()
    assert [p.returncode for p in workers.procs] == [0]  # SIGTERM: a clean exit


async def _running_tool(agent: Any, run_id: str) -> bool:
    effects = await agent.deps.runtime.effects(run_id)
    return any(e.kind == "tool" and e.status == "pending" for e in effects)


async def _first_ledger_times(schema: str) -> list[tuple[str, list[float]]]:
    rows = await sql(f"SELECT run_id, started FROM {schema}.ledger")
    grouped: dict[str, list[float]] = defaultdict(list)
    for run_id, started in rows:
        grouped[run_id].append(started)
    return list(grouped.items())
