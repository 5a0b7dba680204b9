"""What a fleet worker does with jobs it cannot go on with now, or ever: against the real
Postgres server (tests/pg.py), each test in a schema of its own, with workers in this
process (`Worker.run` as a task) and, for a crashed run, a real `loomgraph worker`
SIGKILLed inside a tool (tests/fleet_agent.py).

- A per-user slot whose connection cannot be made puts the job back (the run goes on later).
- A job no version writes, or naming a module missing on the worker, fails its run with a
  typed reason; one a newer version wrote goes back to the queue, the run waits `queued`.
- A job that must wait for a recovery goes back to the queue instead of being held, picked,
  inside a busy worker while another one is free.
- Whether a lease expired, and how long until it does, is judged by the database's clock:
  a worker whose clock is off neither misses a crashed run nor retries a leased one at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import fleet_agent
import pg
import test_fleet
import test_fleet_cancel_findings
from loomgraph.agent.fleet import JobFromNewerVersion, JobKind, JobUnusable, RunJob
from loomgraph.agent.resuming import RunNotStarted
from loomgraph.agent.submitting import RunWaitTimeout
from loomgraph.protocols import RunStatus
from loomgraph.runtime.postgres import PostgresRuntime
from loomgraph.tools.context import ToolContext
from loomgraph.workers import worker as worker_module
from loomgraph.workers.worker import Worker, WorkerOptions
from tcp_proxy import TcpProxy
from test_fleet import sql, until

pytestmark = pytest.mark.postgres
pg_schema = pg.pg_schema
env = test_fleet.env


def options(**changes: Any) -> WorkerOptions:
    """The tests' worker options: quick polls, the fleet tests' heartbeat."""
    base: dict[str, Any] = {
        "concurrency": 4,
        "heartbeat_seconds": test_fleet.HEARTBEAT,
        "poll_seconds": 0.2,
    }
    return WorkerOptions(**{**base, **changes})


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """`worker` taking jobs in this event loop (bounded wait until it does); stopped after,
    the runs in hand finished first."""
    ready = asyncio.Event()
    task = asyncio.create_task(worker.run(ready=ready.set))
    waiting = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiting}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if not ready.is_set():
        waiting.cancel()
        await task  # its error, or:
        raise AssertionError("the worker did not get ready")
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)
        await worker.agent.aclose()


async def job_row(schema: str, run_id: str) -> Any:
    """The run's job in pgqueuer's table (status, attempts), or None when it has none."""
    rows = await sql(
        f"SELECT id, status::text, attempts FROM {schema}.pgqueuer WHERE dedupe_key = $1",
        run_id,
    )
    return rows[0] if rows else None


async def picks(schema: str, job_id: int) -> int:
    """How many times the job was picked (pgqueuer's log)."""
    rows = await sql(
        f"SELECT count(*) FROM {schema}.pgqueuer_log WHERE job_id = $1 AND status = 'picked'",
        job_id,
    )
    return int(rows[0][0])


def proxied(dsn: str, port: int) -> str:
    """`dsn` through a loopback proxy listening on `port`."""
    parts = urlsplit(dsn)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


# --------------------------------------------------------------------------- 1. slots


async def test_a_slot_connection_that_cannot_be_made_puts_the_job_back(
    env: dict[str, str], pg_schema: str
) -> None:
    target = urlsplit(pg.postgres_dsn())
    host, port = target.hostname or "127.0.0.1", target.port or 5432
    proxy = TcpProxy(host, port)
    proxy.cut()  # new connections refused: the server at max_connections, say
    worker = Worker(fleet_agent.make(), options(per_user=2))
    # Only the slots' connections go through the proxy; the journal's and the queue's work.
    worker.slots.dsn = proxied(pg.postgres_dsn(), proxy.port)
    async with fleet_agent.make() as client, running(worker):
        run_id = await client.submit("refused slot", user_id="alice")

        async def handled() -> Any:
            row = await job_row(pg_schema, run_id)
            return "gone" if row is None else ("put back" if row["attempts"] >= 1 else None)

        assert await until("the worker handled the job", handled, 30) == "put back"
        record = await client.deps.runtime.load_run(run_id)
        assert record is not None and record.status == RunStatus.QUEUED
        # Connections can be made again: the run goes on from the job that was put back.
        with TcpProxy(host, port, listen=proxy.port):
            result = await client.wait(run_id, timeout=30)
            assert result.status == RunStatus.COMPLETED
            assert result.output == "answer to refused slot"


# --------------------------------------------------------------------------- 2. payloads


GOOD = RunJob("r1", JobKind.START, user_id="u", prompt="p").encode()


def _with(**changes: Any) -> bytes:
    return json.dumps({**json.loads(GOOD), **changes}).encode()


# Payloads, the error decoding each raises, and what its message says.
DECODE_CASES: list[tuple[bytes | None, type[Exception], str]] = [
    (b"\x00garbage{", JobUnusable, "not JSON"),
    (b"\xff\xfe{}", JobUnusable, "not UTF-8"),
    (b"[1]", JobUnusable, "an array, not an object"),
    (b"", JobUnusable, "not JSON"),
    (None, JobUnusable, "not JSON"),
    (json.dumps({"kind": "start"}).encode(), JobUnusable, "no 'run_id'"),
    (_with(run_id=12345), JobUnusable, "run_id is a number, not a non-empty string"),
    (_with(run_id=""), JobUnusable, "run_id is an empty string, not a non-empty string"),
    (_with(prompt=None), JobUnusable, "prompt is null, not a string"),
    (_with(output_retries=True), JobUnusable, "output_retries is a boolean"),
    (_with(kind=3), JobUnusable, "kind is a number"),
    # Wrong types are wrong in every version, new fields or not.
    (_with(prompt=None, trace_id="t"), JobUnusable, "prompt is null"),
    (_with(trace_id="t"), JobFromNewerVersion, "fields this loomgraph does not know"),
    (_with(kind="fork"), JobFromNewerVersion, "a kind this loomgraph does not know"),
    (_with(answer={"edit": 1}), JobFromNewerVersion, "answer has keys"),
]


@pytest.mark.parametrize(
    ("payload", "error", "says"), DECODE_CASES, ids=[c[2] for c in DECODE_CASES]
)
def test_a_payload_is_unusable_or_from_a_newer_version(
    payload: bytes | None, error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=says):
        RunJob.decode(payload)


def test_every_field_a_job_writes_is_read_back() -> None:
    job = RunJob(
        "r",
        JobKind.RESUME,
        user_id=None,
        prompt="",
        session_id="s",
        output_schema="m:C",
        output_retries=2,
        answer={"approve": {"key": "k", "approve": True}},
        agent="a",
    )
    assert RunJob.decode(job.encode()) == job
    # A job of an older version (fewer fields) is read with the defaults.
    assert RunJob.decode(b'{"run_id": "r", "kind": "start"}') == RunJob("r", JobKind.START)


# How jobs no loomgraph writes look to a worker; what each run's reason must name.
UNUSABLE: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "not JSON": (lambda p: b"\x00garbage{", "not JSON"),
    "run id a number": (lambda p: {**p, "run_id": 12345}, "run_id is a number"),
    "prompt null": (lambda p: {**p, "prompt": None}, "prompt is null"),
    "module missing": (
        lambda p: {**p, "output_schema": "no_such_module_here:Summary"},
        "output schema cannot be imported: cannot import output schema "
        "'no_such_module_here:Summary'",
    ),
}
# Jobs a newer loomgraph writes.
NEWER: dict[str, Callable[[dict[str, Any]], Any]] = {
    "extra field": lambda p: {**p, "trace_id": "abc"},
    "unknown kind": lambda p: {**p, "kind": "fork"},
}


def _put_back(run_id: str, times: int) -> Callable[[], Any]:
    """A check: the run's job is in the queue, put back at least `times` times."""
    schema = os.environ["FLEET_SCHEMA"]

    async def check() -> bool:
        row = await job_row(schema, run_id)
        assert row is not None, f"the job of run {run_id} was dropped"
        return bool(row["attempts"] >= times)

    return check


async def _rewrite(schema: str, run_id: str, change: Callable[[dict[str, Any]], Any]) -> bytes:
    """Give the run's (delayed) job another payload and make it due; the old payload."""
    rows = await sql(f"SELECT id, payload FROM {schema}.pgqueuer WHERE dedupe_key = $1", run_id)
    job_id, old = rows[0]
    new = change(json.loads(old))
    data = new if isinstance(new, bytes) else json.dumps(new).encode()
    await sql(
        f"UPDATE {schema}.pgqueuer SET payload = $2, execute_after = now() WHERE id = $1",
        job_id,
        data,
    )
    return bytes(old)


async def test_a_job_no_worker_can_use_fails_its_run_and_a_newer_ones_waits(
    env: dict[str, str], pg_schema: str
) -> None:
    later = time.time() + 3600  # due only once rewritten
    async with fleet_agent.make() as client:
        unusable = {}
        for name, (change, _) in UNUSABLE.items():
            run_id = await client.submit(f"run {name}", user_id="u1", run_at=later)
            await _rewrite(pg_schema, run_id, change)
            unusable[name] = run_id
        newer = {}
        for name, change in NEWER.items():
            run_id = await client.submit(f"run {name}", user_id="u1", run_at=later)
            newer[name] = (run_id, await _rewrite(pg_schema, run_id, change))
        good = await client.submit("a good run", user_id="u2")

        async with running(Worker(fleet_agent.make(), options())):
            assert (await client.wait(good, timeout=30)).status == RunStatus.COMPLETED
            for name, run_id in unusable.items():
                # `wait` ends: the run failed, its reason the typed error naming the problem.
                result = await client.wait(run_id, timeout=30)
                assert result.status == RunStatus.FAILED, name
                assert result.reason.startswith("JobUnusable: "), (name, result.reason)
                assert UNUSABLE[name][1] in result.reason, (name, result.reason)
                assert await job_row(pg_schema, run_id) is None  # the job was ended
                # Nothing to go on from: submit again (the message says why it never started).
                with pytest.raises(RunNotStarted, match="its job could not start it"):
                    await client.retry(run_id)

            for name, (run_id, _) in newer.items():
                # Put back again and again for a worker that reads it: never dropped.
                await until(f"the job of {name} was put back twice", _put_back(run_id, 2), 30)
                with pytest.raises(RunWaitTimeout, match="it is queued"):
                    await client.wait(run_id, timeout=0.3)
                record = await client.deps.runtime.load_run(run_id)
                assert record is not None and record.status == RunStatus.QUEUED

            # The job kept in the queue is what a worker that reads it goes on from (here
            # its payload as this version wrote it: the reading worker's view).
            for name, (run_id, old) in newer.items():
                await _rewrite(pg_schema, run_id, lambda p, old=old: old)
                result = await client.wait(run_id, timeout=30)
                assert result.status == RunStatus.COMPLETED, name
                assert result.output == f"answer to run {name}"
        # Nothing of the unusable runs ran.
        rows = await sql(f"SELECT run_id FROM {pg_schema}.attempts")
        assert not {r[0] for r in rows} & set(unusable.values())


# --------------------------------------------------------------------------- 3. quarantine


async def test_a_job_that_must_wait_for_a_recovery_is_not_held_while_a_worker_is_free(
    env: dict[str, str], tmp_path: Path, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    held: dict[str, asyncio.Event] = {}
    entered: dict[str, asyncio.Event] = {}
    original = fleet_agent.work

    @functools.wraps(original)
    async def work(item: str, context: ToolContext) -> str:
        if context.run_id in held:  # the long run: in its tool until the test lets it go
            entered[context.run_id].set()
            await held[context.run_id].wait()
        return await original(item, context)

    async with fleet_agent.make() as client:
        # A run whose worker was SIGKILLed in a tool: its job stays picked by the dead
        # worker, kept from going stale (and being picked again) until the test says so.
        crashed = await test_fleet_cancel_findings._crashed_run(env, tmp_path, client, monkeypatch)
        crashed_job = (await job_row(pg_schema, crashed))["id"]
        await _beat(pg_schema, crashed_job, "now() + interval '1 hour'")
        monkeypatch.setattr(fleet_agent, "work", work)  # the in-process workers' tool

        busy = Worker(fleet_agent.make(), options(queues=("runs", "long")))
        async with running(busy):
            long_run = await client.submit("long work", user_id="carol", queue="long")
            held[long_run], entered[long_run] = asyncio.Event(), asyncio.Event()
            try:
                await asyncio.wait_for(entered[long_run].wait(), 30)
                # The dead worker's heartbeat is stale now: the busy worker picks the job,
                # a recovery, which must run alone and so cannot start there.
                await _beat(pg_schema, crashed_job, "now() - interval '1 hour'")
                await until("the recovery was picked", _picked(pg_schema, crashed_job, 2), 30)
                short = await client.submit("short work", user_id="dave")
                short_job = (await job_row(pg_schema, short))["id"]
                await until("the short run was picked", _picked(pg_schema, short_job, 1), 30)

                # A free worker joins: the short run and the recovery go on there, while
                # the long run is still in the busy worker's hands.
                async with running(Worker(fleet_agent.make(), options())):
                    result = await client.wait(short, timeout=20)
                    assert result.status == RunStatus.COMPLETED
                    assert (await client.wait(crashed, timeout=30)).status == RunStatus.COMPLETED
                    record = await client.deps.runtime.load_run(long_run)
                    assert record is not None and record.status == RunStatus.RUNNING
                    assert not held[long_run].is_set()
            finally:
                held[long_run].set()
            assert (await client.wait(long_run, timeout=30)).status == RunStatus.COMPLETED


async def _beat(schema: str, job_id: int, when: str) -> None:
    """Set the job's last heartbeat (a picked job whose beat is stale is picked again)."""
    await sql(f"UPDATE {schema}.pgqueuer SET heartbeat = {when} WHERE id = $1", job_id)


def _picked(schema: str, job_id: int, times: int) -> Callable[[], Any]:
    """A check: the job was picked at least `times` times."""

    async def check() -> bool:
        return await picks(schema, job_id) >= times

    return check


# --------------------------------------------------------------------------- 4. clocks


class _SkewedTime:
    """The `time` module, its wall clock `skew` seconds off (the probe's worker clock)."""

    def __init__(self, skew: float) -> None:
        self.skew = skew

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def time(self) -> float:
        return time.time() + self.skew


async def test_a_worker_whose_clock_is_behind_still_sees_a_crashed_run(
    env: dict[str, str], tmp_path: Path, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import loomgraph.agent.leases as leases

    async with fleet_agent.make() as client:
        crashed = await test_fleet_cancel_findings._crashed_run(env, tmp_path, client, monkeypatch)
        # The worker is on a host of its own (the dead one's pid means nothing to it, so
        # only the lease's expiry says it died), and its clock is a minute behind.
        monkeypatch.setattr(leases, "_HOST", "another-host")
        monkeypatch.setattr(worker_module, "time", _SkewedTime(-60.0), raising=False)
        judged: list[bool] = []
        original = Worker._crashed

        async def spy(self: Worker, run_id: str) -> bool:
            found = await original(self, run_id)
            if run_id == crashed:
                judged.append(found)
            return found

        monkeypatch.setattr(Worker, "_crashed", spy)
        async with running(Worker(fleet_agent.make(), options())):
            assert (await client.wait(crashed, timeout=30)).status == RunStatus.COMPLETED
        # It was recovered as a crashed run (alone, one recovery counted), not taken for a
        # run some live worker holds because this host's clock said its lease was live.
        assert judged and judged[-1] is True, judged


async def test_a_worker_whose_clock_is_ahead_waits_for_a_leased_run(
    env: dict[str, str], pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "time", _SkewedTime(60.0), raising=False)
    async with fleet_agent.make() as client:
        run_id = await client.submit("leased elsewhere", user_id="u")
        # A live worker on another host holds the run for 3 s more (by the database clock).
        await client.deps.runtime.acquire_lease(run_id, "another-host:1::abcd", ttl=3.0)
        job_id = (await job_row(pg_schema, run_id))["id"]
        async with running(Worker(fleet_agent.make(), options())):
            result = await client.wait(run_id, timeout=30)
        assert result.status == RunStatus.COMPLETED
        # Put back until that lease expires, once (maybe twice): not every 50 ms because
        # this host's clock said it had expired a minute ago.
        assert await picks(pg_schema, job_id) <= 3


# ------------------------------------------------------------------- 5. a started run's error


class RaisingOnce(PostgresRuntime):
    """The fleet's journal, whose first `finish_run` raises an error the engine does not
    expect (a driver's bug, a deadlock): it escapes the run's session."""

    raised = False

    async def finish_run(self, *args: Any, **kwargs: Any) -> None:
        if not RaisingOnce.raised:
            RaisingOnce.raised = True
            raise RuntimeError("an error nobody expected")
        await super().finish_run(*args, **kwargs)


async def test_a_started_run_whose_job_raised_is_recovered_not_left_running(
    env: dict[str, str], pg_schema: str
) -> None:
    """Found by probing the fleet: an unexpected error escaping a started run ended its job
    (pgqueuer's `exception`) and left the run `running`, with no job and nobody holding it:
    nothing would ever move it again. The job is put back, and the run recovered."""
    RaisingOnce.raised = False
    runtime = RaisingOnce(
        os.environ["FLEET_DSN"], schema=os.environ["FLEET_SCHEMA"], lease_seconds=2.0
    )
    worker = Worker(fleet_agent.make(runtime=runtime), options())
    async with fleet_agent.make() as client, running(worker):
        run_id = await client.submit("raise once", user_id="alice")
        result = await client.wait(run_id, timeout=60)
        assert RaisingOnce.raised
        assert result.status == RunStatus.COMPLETED, result.reason
