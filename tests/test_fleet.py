"""The worker fleet with real processes on the Postgres server: `loomgraph worker`
subprocesses take submitted runs from the queue (pgqueuer) and advance them.

The agent is `tests/fleet_agent.py` (its docstring says what its tools write). The
three-worker test submits the issue's 300 runs (`LOOMGRAPH_FLEET_RUNS` sets another number).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import fleet_agent
import pg
from loomgraph._storage.dsn import describe_dsn
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
CLI = [sys.executable, "-m", "loomgraph.cli.main"]
# Runs of the three-worker test before its stop phase (and 6 more in it): 294 + 6 = 300.
RUNS = int(os.environ.get("LOOMGRAPH_FLEET_RUNS", "294"))


def wait_until_ready(proc: subprocess.Popen[str], lines: queue.Queue[tuple[int, str]]) -> None:
    """Pump a worker's stdout into `lines` (pid, line) and wait (bounded) for its ready line."""

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put((proc.pid, line.strip()))

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 60
    while True:
        pid, line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if pid == proc.pid and line.endswith("ready"):
            return
        assert time.monotonic() < deadline, "worker did not get ready"


class Fleet:
    """`loomgraph worker` subprocesses on one schema; each prints a ready line first."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str) -> None:
        self.env, self.cwd, self.args = env, cwd, args
        self.procs: list[subprocess.Popen[str]] = []
        self.lines: queue.Queue[tuple[int, str]] = queue.Queue()

    def start(self, extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:
        """Start one worker and wait (bounded) until it takes jobs."""
        cmd = [*CLI, "worker", "--agent", "fleet_agent:make"]
        with open(self.cwd / f"worker-{len(self.procs)}.err", "w") as said:
            proc = subprocess.Popen(
                [*cmd, *self.args, *extra],
                env=self.env,
                cwd=self.cwd,
                stdout=subprocess.PIPE,
                stderr=said,
                text=True,
            )
        self.procs.append(proc)
        wait_until_ready(proc, self.lines)
        return proc

    def said(self, proc: subprocess.Popen[str]) -> str:
        """What a worker wrote on stderr."""
        return (self.cwd / f"worker-{self.procs.index(proc)}.err").read_text()

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
        # cancel is the fleet's: said, with how an in-process run stops instead.
        with pytest.raises(FleetNeedsPostgres, match="its task is cancelled"):
            await agent.cancel("nope")
        await agent.aclose()
    # The commands say so too, and exit 2.
    (tmp_path / "agent.yaml").write_text(
        "schema_version: 1\nname: t\nmodel: echo\nruntime: sqlite:./j.db\n"
    )
    env = dict(os.environ, PYTHONPATH=str(SRC))
    for command in (["worker"], ["serve", "--fleet"]):
        done = subprocess.run(
            [*CLI, *command, "--agent", "agent.yaml"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and "needs the Postgres journal" in done.stderr, command


async def test_bad_inputs_get_typed_errors(agent: Any, env: dict[str, str], pg_schema: str) -> None:
    with pytest.raises(UnknownRun):
        await agent.wait("no-such-run", timeout=1)
    with pytest.raises(UnknownRun):
        await agent.cancel("no-such-run")
    with pytest.raises(UnknownRun):
        await agent.submit_resume("no-such-run", approve=True)
    with pytest.raises(UnknownRun):  # no answer: sent on past an expired request, if any
        await agent.submit_resume("no-such-run")

    class Local:  # not importable by a worker
        pass

    with pytest.raises(FleetError, match="module level"):
        await agent.submit("x", output_schema=Local)
    with pytest.raises(FleetError, match="time zone"):
        await agent.submit("x", run_at=datetime(2030, 1, 1))
    with pytest.raises(FleetError, match="priority must be an int"):
        await agent.submit("x", priority="high")
    with pytest.raises(FleetError, match="queue must be"):
        await agent.submit("x", queue="")
    with pytest.raises(FleetError, match="one of approve= or value=, or neither"):
        await agent.submit_resume("no-such-run", approve=True, value=1)
    with pytest.raises(FleetError, match="queue must be"):
        await agent.submit_resume("no-such-run", approve=True, queue="")
    with pytest.raises(FleetError, match="priority must be an int"):
        await agent.submit_resume("no-such-run", approve=True, priority=1.5)
    # The queue keeps a priority in 32 bits: the driver's DataError used to reach the caller.
    for priority in (2**31, -(2**31) - 1):
        with pytest.raises(FleetError, match=r"priority must be .* -2147483648 to 2147483647"):
            await agent.submit("x", priority=priority)
    # A start time is an aware datetime or finite epoch seconds: text or a date used to give
    # a bare ValueError or TypeError, infinity an OverflowError, and NaN started at once.
    for run_at in ("2030-01-01T00:00:00+00:00", date(2030, 1, 1), True):
        with pytest.raises(FleetError, match=r"run_at must be an aware datetime or epoch"):
            await agent.submit("x", run_at=run_at)
    for run_at in (math.nan, math.inf, -math.inf):
        with pytest.raises(FleetError, match=r"run_at must be finite epoch seconds"):
            await agent.submit("x", run_at=run_at)
    # wait's own arguments: a run id is text, a timeout a number of seconds, not negative.
    with pytest.raises(TypeError, match="run_id must be a str"):
        await agent.wait(None, timeout=1)
    with pytest.raises(TypeError, match="run_id must be a str"):
        await agent.wait(123, timeout=1)
    for timeout in ("5", -1, math.nan):
        with pytest.raises(FleetError, match=r"timeout must be .*seconds"):
            await agent.wait("no-such-run", timeout=timeout)
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

    # From the command line: `runs cancel`, and a worker refusing a concurrency it cannot keep.
    other = await agent.submit("cancelled from the shell", user_id="u")
    cancel = [*CLI, "runs", "cancel", other, "--agent", "fleet_agent:make", "--by", "ops"]
    done = subprocess.run(cancel, env=env, cwd=TESTS, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == f"run {other}: cancelled\n", done.stderr
    assert (await agent.deps.runtime.load_run(other)).reason == "cancelled by ops"
    again = subprocess.run(cancel, env=env, cwd=TESTS, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "nothing to cancel" in again.stderr
    worker = [*CLI, "worker", "--agent", "fleet_agent:make", "--concurrency", "1"]
    refused = subprocess.run(worker, env=env, cwd=TESTS, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--concurrency: must be at least 2" in refused.stderr


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


# --------------------------------------------------------------------------- three workers


def _leases_of(pid: int) -> Callable[[], Any]:
    async def held() -> list[tuple[str, int]]:
        rows = await sql(
            f"SELECT run_id, token FROM {os.environ['FLEET_SCHEMA']}.leases "
            "WHERE split_part(owner, ':', 2) = $1 AND expires_at > extract(epoch from now())",
            str(pid),
        )
        return [(r[0], r[1]) for r in rows]

    return held


async def test_three_workers_survive_a_kill_and_a_stop(
    agent: Any, env: dict[str, str], tmp_path: Path, pg_schema: str
) -> None:
    users = [f"user{i}" for i in range(6)]
    workers = fleet(env, tmp_path, "--concurrency", "4", "--per-user", "2")
    for _ in range(3):
        workers.start()
    killed, stopped, other = workers.procs
    try:
        runs: dict[str, str] = {}
        for i in range(RUNS):
            # Every eighth run is slow (1.5 s tool calls), so the kill and the stop find
            # runs in flight.
            prompt = f"run {i}" + (" slow" if i % 8 == 0 else "")
            run_id = await agent.submit(prompt, user_id=users[i % len(users)])
            runs[run_id] = users[i % len(users)]

        held = await until("a run in the first worker", _leases_of(killed.pid), 60)
        os.kill(killed.pid, signal.SIGKILL)
        died = time.monotonic()
        killed.wait(timeout=30)

        # Its runs are taken by another worker within the documented bound: the heartbeat
        # timeout plus one poll (+ slack for a loaded 2-core machine).
        async def taken_over() -> bool:
            for run_id, token in held:
                lease = await agent.deps.runtime.lease(run_id)
                record = await agent.deps.runtime.load_run(run_id)
                if record.status == RunStatus.RUNNING and (lease is None or lease.token == token):
                    return False
            return True

        await until("the killed worker's runs taken over", taken_over, 60)
        assert time.monotonic() - died < HEARTBEAT + 0.5 + 10

        # More slow runs, so the second worker surely has one in hand to be stopped with.
        for i in range(len(users)):
            run_id = await agent.submit(f"late run {i} slow", user_id=users[i])
            runs[run_id] = users[i]
        in_stopped = await until("a run in the second worker", _leases_of(stopped.pid), 60)
        os.kill(stopped.pid, signal.SIGSTOP)

        async def moved_on() -> bool:
            for run_id, token in in_stopped:
                lease = await agent.deps.runtime.lease(run_id)
                record = await agent.deps.runtime.load_run(run_id)
                if not record.status.final and (lease is None or lease.token == token):
                    return False
            return True

        # Past its lease: another worker took its runs over (or finished them).
        await until("the stopped worker's runs taken over", moved_on, 60)

        results = {}
        for run_id in runs:
            results[run_id] = (await agent.wait(run_id, timeout=120)).to_dict()
        os.kill(stopped.pid, signal.SIGCONT)  # the zombie wakes up: it must change nothing
        await until(
            "the woken worker to give its runs back",
            lambda: _no_live_lease_of(stopped.pid),
            60,
        )
    finally:
        workers.stop()
    assert killed.returncode == -signal.SIGKILL
    assert stopped.returncode == 0 and other.returncode == 0

    records = {r.run_id: r for r in await agent.runs()}
    assert {records[r].status for r in runs} == {RunStatus.COMPLETED}
    for run_id, result in results.items():  # a finished run's result never changed
        assert records[run_id].result == result

    ledger = await sql(f"SELECT key, run_id, user_id FROM {pg_schema}.ledger")
    per_run: dict[str, int] = defaultdict(int)
    for _, run_id, _ in ledger:
        per_run[run_id] += 1
    assert per_run == {run_id: 3 for run_id in runs}  # one entry per key, every key there
    journaled = {
        e.key
        for run_id in runs
        for e in await agent.deps.runtime.effects(run_id)
        if e.kind == "tool"
    }
    assert {row[0] for row in ledger} == journaled

    # At most K=2 runs of one user were ever inside a tool at once, from the ledger's
    # timestamps (the execution that counted for each key).
    timed = await sql(f"SELECT user_id, run_id, started, ended FROM {pg_schema}.ledger")
    peaks = {user: _peak([(a[2], a[3], a[1]) for a in timed if a[0] == user]) for user in users}
    assert max(peaks.values()) == 2, peaks  # reached (so the check can fail), never exceeded
    # And no worker had more than its --concurrency (4) runs inside a tool at once.
    by_pid = await sql(f"SELECT pid, run_id, started, ended FROM {pg_schema}.ledger")
    per_worker = {p: _peak([(r[2], r[3], r[1]) for r in by_pid if r[0] == p]) for p, *_ in by_pid}
    assert 1 < max(per_worker.values()) <= 4, per_worker


async def _no_live_lease_of(pid: int) -> bool:
    return not await _leases_of(pid)()


def _peak(intervals: list[tuple[float, float, str]]) -> int:
    """The most distinct runs inside a tool at one moment."""
    points = sorted({t for start, end, _ in intervals for t in (start, end)})
    peak = 0
    for a, b in itertools.pairwise(points):
        middle = (a + b) / 2
        peak = max(peak, len({run for start, end, run in intervals if start < middle < end}))
    return peak


# --------------------------------------------------------------------------- poison


async def test_a_poison_run_becomes_a_dead_letter_while_the_others_finish(
    agent: Any, env: dict[str, str], tmp_path: Path
) -> None:
    workers = fleet(env, tmp_path, "--concurrency", "2")
    for _ in range(2):
        workers.start()
    try:
        poison = await agent.submit("poison pill", user_id="p")
        others = [await agent.submit(f"fine {i}", user_id=f"o{i}") for i in range(6)]

        async def settled() -> bool:
            dead = [p for p in workers.procs if p.poll() is not None]
            for _ in range(2 - len(workers.alive())):
                workers.start()  # a supervisor restarts killed workers
            record = await agent.deps.runtime.load_run(poison)
            return bool(dead) and record.status == RunStatus.DEAD_LETTER

        await until("the poison run to become a dead letter", settled, 120)
        finished = [await agent.wait(r, timeout=60) for r in others]
    finally:
        workers.stop()
    assert {r.status for r in finished} == {RunStatus.COMPLETED}
    record = await agent.deps.runtime.load_run(poison)
    assert record.status == RunStatus.DEAD_LETTER
    assert "gave up after 2 failed recoveries" in record.reason
    kills = [p for p in workers.procs if p.returncode == -signal.SIGKILL]
    assert len(kills) == 3  # the first try and two recoveries; the third recovery gave up


# --------------------------------------------------------------------------- approvals


async def test_runs_waiting_for_approval_hold_no_slot(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_ASK", "1")
    env = {**env, "FLEET_ASK": "1"}
    agent = fleet_agent.make()
    workers = fleet(env, tmp_path, "--concurrency", "2", "--per-user", "1")
    workers.start()
    try:
        runs = [await agent.submit(f"ask {i}", user_id="u") for i in range(3)]
        # With one slot per user, three runs could reach the approval only if a waiting run
        # gives its slot back.
        waiting = [await agent.wait(r, timeout=60) for r in runs]
        assert {w.status for w in waiting} == {RunStatus.AWAITING_APPROVAL}
        for run_id in runs:
            await agent.submit_resume(run_id, approve=True)
        done = [await agent.wait(r, timeout=60) for r in runs]
        assert {d.status for d in done} == {RunStatus.COMPLETED}
        kinds = [e.event.kind async for e in agent.events(runs[0], poll_interval=0.05)]
    finally:
        workers.stop()
        await agent.aclose()
    assert kinds[0] == "run_started" and kinds[-1] == "run_completed"
    assert kinds.count("tool_result") == 3 and "permission_decision" in kinds


async def test_a_worker_stopped_before_it_journals_an_answer_changes_nothing_on_waking(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker A takes the answer job of a run waiting for approval and is SIGSTOPped before
    it journals the answer: past its lease and heartbeat, worker B takes the job over,
    journals the answer and ends the run, the approved call run once. A, woken, goes on to
    journal the answer: its lease is gone, so it writes nothing, runs nothing and leaves
    the run as B ended it. (Found untested by the fleet probe: the answer's write was known
    to be fenced, never shown to be.)"""
    monkeypatch.setenv("FLEET_ASK", "1")
    hold = tmp_path / "hold"
    hold.mkdir()
    env = {**env, "FLEET_ASK": "1", "FLEET_HOLD_ANSWER": str(hold)}
    agent = fleet_agent.make()
    workers = fleet(env, tmp_path, "--concurrency", "2")
    workers.start()
    workers.start()
    schema = env["FLEET_SCHEMA"]
    try:
        run_id = await agent.submit("ask", user_id="u")
        waiting = await agent.wait(run_id, timeout=60)
        assert waiting.status == RunStatus.AWAITING_APPROVAL, waiting.reason
        await agent.submit_resume(run_id, approve=True)
        held = await until("a worker about to journal the answer", lambda: _held(hold), 60)
        os.kill(held, signal.SIGSTOP)
        done = await agent.wait(run_id, timeout=60)  # the other worker took the job over
        assert done.status == RunStatus.COMPLETED, done.reason
        ended = await agent.deps.runtime.load_run(run_id)
        attempts = await sql(f"SELECT key, pid FROM {schema}.attempts")
        os.kill(held, signal.SIGCONT)
        (hold / "go").write_text("")  # the zombie goes on to journal its answer
        done_file = hold / "done"
        await until("the woken worker's answer", lambda: done_file.exists(), 60)
        refused = done_file.read_text()
    finally:
        workers.stop()
    # Never journaled: its lease keeper, woken too, stops it (CancelledError), or, should
    # the write come first, the write is fenced (LeaseLost): the lease is another's.
    assert refused in ("CancelledError", "LeaseLost"), refused
    assert {p.returncode for p in workers.procs} == {0}
    # Said, so an operator sees the takeover (the woken worker logged nothing of it).
    (zombie,) = [p for p in workers.procs if p.pid == held]
    assert f"run {run_id!r}: lease lost" in workers.said(zombie), workers.said(zombie)
    assert "another worker took the run over" in workers.said(zombie)
    assert len(attempts) == 3 and held not in {pid for _, pid in attempts[2:]}
    assert await sql(f"SELECT key, pid FROM {schema}.attempts") == attempts  # nothing ran again
    after = await agent.deps.runtime.load_run(run_id)
    assert after is not None and ended is not None
    assert (after.status, after.result) == (ended.status, ended.result)
    answers = [e for e in await agent.deps.runtime.effects(run_id) if e.kind == "approval"]
    assert [e.outcome["answer"] for e in answers] == [True]
    await agent.aclose()


def _held(folder: Path) -> int | None:
    """The pid of the worker holding an answer in `folder`, once it wrote it."""
    text = (folder / "held").read_text() if (folder / "held").exists() else ""
    return int(text) if text else None


async def test_an_answer_goes_to_the_queue_its_run_was_submitted_to(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_ASK", "1")
    env = {**env, "FLEET_ASK": "1"}
    agent = fleet_agent.make()
    workers = fleet(env, tmp_path, "--concurrency", "2", "--queues", "gpu")
    workers.start()
    try:
        run_id = await agent.submit("ask", user_id="u", queue="gpu")
        waiting = await agent.wait(run_id, timeout=60)
        assert waiting.status == RunStatus.AWAITING_APPROVAL
        # No queue named: the answer follows the run to "gpu", the only queue served.
        await agent.submit_resume(run_id, approve=True)
        done = await agent.wait(run_id, timeout=60)
        queues = await sql(f'SELECT queue FROM "{env["FLEET_SCHEMA"]}".fleet_runs')
    finally:
        workers.stop()
        await agent.aclose()
    assert done.status == RunStatus.COMPLETED
    assert [q["queue"] for q in queues] == ["gpu"]


async def test_a_run_waiting_for_a_value_is_answered_through_the_fleet(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_INTERRUPT", "1")
    env = {**env, "FLEET_INTERRUPT": "1"}
    agent = fleet_agent.make()
    workers = fleet(env, tmp_path, "--concurrency", "2")
    workers.start()
    try:
        run_id = await agent.submit("count", user_id="u")
        waiting = await agent.wait(run_id, timeout=60)
        assert waiting.status == RunStatus.INTERRUPTED and waiting.pending is not None
        with pytest.raises(ResumeError):  # checked when submitted, not by a worker later
            await agent.submit_resume(run_id, value="three")
        await agent.submit_resume(run_id, value=3)
        done = await agent.wait(run_id, timeout=60)
        history = await agent.history(run_id)
    finally:
        workers.stop()
        await agent.aclose()
    assert done.status == RunStatus.COMPLETED and done.output == "did the work 3 times"
    assert history[-1].state["times"] == 3


# --------------------------------------------------------------------------- the server


async def test_the_server_submits_to_the_fleet(
    agent: Any, env: dict[str, str], tmp_path: Path
) -> None:
    import httpx

    from loomgraph.serve import create_app

    with pytest.raises(FleetNeedsPostgres):
        from loomgraph import Agent

        create_app(Agent("x", model="echo"), fleet=True)
    app = create_app(agent, fleet=True, dev=True)
    transport = httpx.ASGITransport(app=app)
    workers = fleet(env, tmp_path, "--concurrency", "2")
    headers = {"X-User-Id": "alice"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        queued = await client.post(
            "/v1/runs", json={"input": "in the background", "background": True}, headers=headers
        )
        assert queued.status_code == 202 and queued.json()["status"] == "queued"
        run_id = queued.json()["run_id"]
        dropped = await client.post(
            "/v1/runs", json={"input": "dropped", "background": True}, headers=headers
        )
        dropped_id = dropped.json()["run_id"]
        cancelled = await client.post(f"/v1/runs/{dropped_id}/cancel", headers=headers)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["reason"] == "cancelled by alice"
        record = await agent.deps.runtime.load_run(run_id)
        assert record.status == RunStatus.QUEUED  # nothing runs in the server process
        workers.start()
        try:
            waited = await client.post("/v1/runs", json={"input": "waited for"}, headers=headers)
            assert waited.status_code == 201 and waited.json()["status"] == "completed"
            assert (await agent.wait(run_id, timeout=60)).output == "answer to in the background"
            shown = (await client.get(f"/v1/runs/{run_id}", headers=headers)).json()
            assert shown["status"] == "completed"
            streamed = await client.post(
                "/v1/runs", json={"input": "streamed", "stream": True}, headers=headers
            )
            kinds = [
                line.removeprefix("event: ")
                for line in streamed.text.splitlines()
                if line.startswith("event: ")
            ]
            assert kinds[0] == "run_started" and kinds[-1] == "run_completed", kinds
            assert "tool_result" in kinds
            again = await client.post(f"/v1/runs/{dropped_id}/cancel", headers=headers)
            assert again.status_code == 409
            assert (await agent.deps.runtime.effects(dropped_id)) == []  # it never started
        finally:
            workers.stop()
    assert [p.returncode for p in workers.procs] == [0]


async def test_sigterm_finishes_the_runs_in_hand(
    agent: Any, env: dict[str, str], tmp_path: Path
) -> None:
    workers = fleet(env, tmp_path, "--concurrency", "2")
    proc = workers.start()
    try:
        slow = await agent.submit("slow, then a clean stop", user_id="s")
        await until("the slow run's first tool call", lambda: _running_tool(agent, slow), 30)
        proc.terminate()
        assert proc.wait(timeout=60) == 0
    finally:
        workers.stop()
    record = await agent.deps.runtime.load_run(slow)
    assert record.status == RunStatus.COMPLETED  # finished, not cancelled or left running
    assert record.recoveries == 0


async def test_a_worker_making_the_journal_says_so(env: dict[str, str], tmp_path: Path) -> None:
    """A worker pointed at a schema with no journal (a typo in its name) made an empty one
    and waited, as healthy as one serving the real queue. It still makes it (the first of a
    fleet's processes must), and says so on stderr; a worker on a journal says nothing."""
    workers = fleet(env, tmp_path)
    try:
        first = workers.start()
        second = workers.start()
    finally:
        workers.stop()
    assert "holds no journal yet: this worker makes one" in workers.said(first)
    assert "holds no journal" not in workers.said(second)


# --------------------------------------------------------------------------- outages


async def test_a_postgres_outage_ends_the_workers_and_restarted_ones_recover_the_runs(
    agent: Any, env: dict[str, str], tmp_path: Path, pg_schema: str
) -> None:
    from tcp_proxy import TcpProxy

    await agent.submit("installs the queue", user_id="x")
    proxy = TcpProxy("127.0.0.1", 5432)
    port = proxy.port
    # The workers reach Postgres through the proxy; the test's own agent does not.
    dsn = pg.postgres_dsn().replace("127.0.0.1:5432", f"127.0.0.1:{port}")
    workers = fleet({**env, "FLEET_DSN": dsn}, tmp_path, "--concurrency", "4")
    first = [workers.start(), workers.start()]
    try:
        runs = [await agent.submit(f"slow {i}", user_id=f"u{i}") for i in range(6)]

        async def two_running() -> bool:
            rows = await sql(f"SELECT count(*) FROM {pg_schema}.leases WHERE owner <> ''")
            return rows[0][0] >= 2

        await until("two runs in hand", two_running, 60)
        proxy.cut()  # to the workers, the server is gone: every connection closed, refused
        for proc in first:  # their queue connection broke: they exit, as a supervisor expects
            # EX_TEMPFAIL and one line (it was exit 1 and hundreds of lines of tracebacks).
            assert proc.wait(timeout=60) == 75
            said = workers.said(proc)
            assert "Traceback" not in said, said
            assert f"the connection to {describe_dsn(dsn)} broke" in said, said
        proxy = TcpProxy("127.0.0.1", 5432, listen=port)  # the server is back
        workers.start()  # the supervisor's restarts
        workers.start()
        done = [await agent.wait(r, timeout=120) for r in runs]
    finally:
        workers.stop()
        proxy.cut()
    assert {d.status for d in done} == {RunStatus.COMPLETED}
    ledger = await sql(f"SELECT run_id, count(*) FROM {pg_schema}.ledger GROUP BY run_id")
    assert {r[0]: r[1] for r in ledger if r[0] in runs} == {r: 3 for r in runs}


# --------------------------------------------------------------------------- units


def test_a_recovery_runs_alone_and_goes_before_new_runs() -> None:
    from loomgraph.workers.quarantine import Quarantine

    now = [100.0]
    q = Quarantine(hold_seconds=3.0, clock=lambda: now[0])
    # Nothing waits in the quarantine: a job that cannot go in is put back in the queue.
    with q.shared() as first:
        assert first
        with q.alone() as recovery:
            assert not recovery  # a run in hand: the recovery is turned away...
        with q.shared() as later:
            assert not later  # ...and keeps new runs out, so the runs in hand end
    now[0] += 2.0
    with q.shared() as later:
        assert not later  # still kept for the recovery, which comes back
    with q.alone() as recovery:
        assert recovery  # alone
        with q.shared() as beside:
            assert not beside
    with q.shared() as after:
        assert after  # the recovery ran: nothing is kept out any more
    with q.alone() as first, q.alone() as second:
        assert first and not second  # one recovery at a time; the second is kept for
    with q.shared() as later:
        assert not later
    now[0] += 3.0
    # A recovery that was turned away and never came back (another worker ran it) keeps
    # this worker for `hold_seconds` only.
    with q.shared(), q.alone() as recovery:
        assert not recovery
    now[0] += 3.0
    with q.shared() as later:
        assert later


async def test_a_queued_run_is_started_only_while_queued_and_leased(agent: Any) -> None:
    from dataclasses import replace

    from loomgraph.runtime.errors import LeaseLost, RunConflict

    runtime = agent.deps.runtime
    run_id = await agent.submit("started once", user_id="u")
    queued = await runtime.load_run(run_id)
    stale = await runtime.acquire_lease(run_id, "a stopped worker")
    fresh = await runtime.acquire_lease(run_id, "another worker", take_from="a stopped worker")
    started = replace(queued, status=RunStatus.RUNNING)
    with pytest.raises(LeaseLost):  # the stopped worker wakes: it may not start the run
        await runtime.start_queued_run(started, fence=stale)
    assert (await runtime.load_run(run_id)).status == RunStatus.QUEUED
    await runtime.start_queued_run(started, fence=fresh)
    assert (await runtime.load_run(run_id)).status == RunStatus.RUNNING
    await runtime.finish_run(run_id, RunStatus.COMPLETED, "", {"output": "x"}, fence=fresh)
    with pytest.raises(RunConflict, match="not queued"):  # a finished run is never restarted
        await runtime.start_queued_run(started, fence=fresh)
    assert (await runtime.load_run(run_id)).status == RunStatus.COMPLETED


async def test_a_worker_that_lost_the_lease_leaves_no_audit_entry_of_a_start(
    agent: Any, tmp_path: Path
) -> None:
    from loomgraph import Agent
    from loomgraph.models import ScriptedModel
    from loomgraph.observability import FileAuditLog
    from loomgraph.protocols.runtime import current_fence
    from loomgraph.runtime.errors import LeaseLost

    runtime = agent.deps.runtime
    audit = FileAuditLog(tmp_path / "audit.jsonl", unsigned=True)
    worker = Agent("w", model=ScriptedModel(["done"]), runtime=runtime, audit_log=audit)
    run_id = await agent.submit("started once", user_id="u")
    stale = await runtime.acquire_lease(run_id, "a stopped worker")
    await runtime.acquire_lease(run_id, "another worker", take_from="a stopped worker")

    async def ignore(event: Any) -> None:
        return None

    fence = current_fence.set(stale)  # the stopped worker wakes, its lease taken over
    try:
        with pytest.raises(LeaseLost):
            await worker.session("started once", user_id="u", run_id=run_id).execute(
                ignore, leased=True
            )
    finally:
        current_fence.reset(fence)
    assert [e.action for e in audit.entries(run_id=run_id)] == []
    assert (await runtime.load_run(run_id)).status == RunStatus.QUEUED


async def test_a_fork_on_the_fleet_server_is_cancelled_by_cancel(
    agent: Any, env: dict[str, str], tmp_path: Path
) -> None:
    # A fork on a --fleet server is a fleet run a worker drives (a `start_fork` job): its
    # /cancel stops it there, as any fleet run's (it answered 500, FleetError, when the
    # server drove forks itself).
    import httpx

    from loomgraph.serve import create_app

    source = await agent.run("slow source", user_id="alice")
    assert source.status == RunStatus.COMPLETED
    app = create_app(agent, fleet=True, dev=True)
    headers = {"X-User-Id": "alice"}
    workers = fleet(env, tmp_path, "--concurrency", "2")
    workers.start()
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as client,
        ):
            forking = asyncio.create_task(
                client.post(f"/v1/runs/{source.run_id}/fork", json={"at": 1}, headers=headers)
            )

            async def the_fork_calls_its_tool() -> str | None:
                for record in await agent.deps.runtime.runs("alice"):
                    if record.run_id != source.run_id and await _running_tool(agent, record.run_id):
                        return record.run_id
                return None

            fork_id = await until("the fork's tool call", the_fork_calls_its_tool, 30)
            cancelled = await client.post(f"/v1/runs/{fork_id}/cancel", headers=headers)
            assert cancelled.status_code == 200, cancelled.text
            # Stopping at its next effect boundary (it is in a tool call), or stopped.
            assert cancelled.json()["status"] in ("running", "cancelled")
            forked = await asyncio.wait_for(forking, 30)
    finally:
        workers.stop()
    assert forked.status_code == 201 and forked.json()["status"] == "cancelled"
    record = await agent.deps.runtime.load_run(fork_id)
    assert (record.status, record.reason) == (RunStatus.CANCELLED, "cancelled by alice")
    assert record.parent_run_id == source.run_id
