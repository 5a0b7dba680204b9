"""Forks on a worker fleet: a fork is a fleet run, started by a worker (a `start_fork`
job) and recovered like any other when the process driving it dies.

Against the real Postgres server (tests/pg.py), each test in a schema of its own; the
agent is `tests/fleet_agent.py` (its `work` tool writes the side-effect ledger, one row per
idempotency key, and is slow for a prompt holding `slow`). The crash test runs a real
`loomgraph serve --fleet` and real `loomgraph worker` processes, and SIGKILLs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import fleet_agent
import pg
import test_fleet
from loomgraph.agent import fleet_jobs as fleet_module
from loomgraph.agent.fleet import JobFromNewerVersion, JobKind, RunJob, fleet_queue
from loomgraph.agent.resuming import RunQueued
from loomgraph.protocols import EffectStatus, RunStatus
from loomgraph.workers.advance import Advanced, advance
from test_fleet import CLI, sql, until

pytestmark = pytest.mark.postgres
pg_schema = pg.pg_schema
env = test_fleet.env
agent = test_fleet.agent


# The job kinds of the version before fork jobs.
BeforeForks = enum.StrEnum("BeforeForks", {"START": "start", "RESUME": "resume"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(env: dict[str, str], cwd: Path, port: int) -> subprocess.Popen[str]:
    """`loomgraph serve --fleet` on `port`, ready (bounded) once `/healthz` answers."""
    import httpx

    serve = ("serve", "--agent", "fleet_agent:make", "--fleet", "--dev", "--port", str(port))
    proc = subprocess.Popen(
        [*CLI, *serve, "--log-level", "warning"],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, "the server exited"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        assert time.monotonic() < deadline, "the server did not get ready"
        time.sleep(0.05)


async def _fork_of(agent: Any, source: str) -> str | None:
    """The id of the run forked from `source`, once it is journaled."""
    for record in await agent.deps.runtime.runs("alice"):
        if record.parent_run_id == source:
            return str(record.run_id)
    return None


async def _in_tool(agent: Any, run_id: str) -> bool:
    effects = await agent.deps.runtime.effects(run_id)
    return any(e.kind == "tool" and e.status == EffectStatus.PENDING for e in effects)


# --------------------------------------------------------------------------- the crash


async def test_a_fork_survives_the_death_of_the_server_that_forked_it(
    agent: Any,
    env: dict[str, str],
    tmp_path: Path,
    pg_schema: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import httpx

    monkeypatch.setenv("FLEET_SLOW_MS", "50")  # the source run, here: quick
    source = await agent.run("slow source", user_id="alice")
    assert source.status == RunStatus.COMPLETED
    slow = {**env, "FLEET_SLOW_MS": "20000"}  # the fork's slow call outlives its process
    port = _free_port()
    server = _serve(slow, tmp_path, port)
    first = test_fleet.fleet(slow, tmp_path, "--concurrency", "2")
    later = test_fleet.fleet({**env, "FLEET_SLOW_MS": "50"}, tmp_path, "--concurrency", "2")
    try:
        first.start()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            forking = asyncio.create_task(
                client.post(
                    f"/v1/runs/{source.run_id}/fork",
                    json={"at": 1},
                    headers={"X-User-Id": "alice"},
                )
            )
            fork_id = await until("the fork", lambda: _fork_of(agent, source.run_id), 30)
            await until("the fork's slow tool call", lambda: _in_tool(agent, fork_id), 60)
            # Whatever drives the fork dies with it inside its tool call: the server that
            # forked it, and the worker.
            for proc in (server, *first.procs):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            with contextlib.suppress(httpx.HTTPError):
                await asyncio.wait_for(forking, 30)
        later.start()  # a worker of the fleet recovers the fork
        done = await agent.wait(fork_id, timeout=90)
    finally:
        for proc in (server, *first.procs):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        later.stop()
    assert done.status == RunStatus.COMPLETED, (done.status, done.reason)
    assert done.output == "answer to slow source"
    record = await agent.deps.runtime.load_run(fork_id)
    assert record.parent_run_id == source.run_id and record.recoveries == 1
    # Each of the fork's side effects ran once, whoever began it: one ledger row per key,
    # exactly the journal's tool effects.
    ledger = await sql(f"SELECT key FROM {pg_schema}.ledger WHERE run_id = $1", fork_id)
    effects = await agent.deps.runtime.effects(fork_id)
    tools = sorted(e.key for e in effects if e.kind == "tool")
    assert sorted(r[0] for r in ledger) == tools and len(tools) == len(set(tools)) >= 2


# --------------------------------------------------------------------------- in process


async def test_a_submitted_fork_is_journaled_queued_and_enqueued_then_a_worker_starts_it(
    agent: Any, env: dict[str, str], pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_SLOW_MS", "50")
    source = await agent.run("slow source", user_id="alice")
    runtime = agent.deps.runtime
    with pytest.raises(ValueError, match="no checkpoint 99"):  # refused, nothing written
        await agent.submit_fork(source.run_id, at=99)
    fork_id = await agent.submit_fork(source.run_id, at=1, priority=3)
    record = await runtime.load_run(fork_id)
    assert record.status == RunStatus.QUEUED and record.parent_run_id == source.run_id
    assert record.parent_seq == 1 and record.initial is not None and record.initial.node
    rows = await sql(
        f"SELECT payload, priority FROM {pg_schema}.pgqueuer WHERE dedupe_key = $1", fork_id
    )
    assert len(rows) == 1 and rows[0][1] == 3
    job = RunJob.decode(rows[0][0])
    assert (job.kind, job.run_id, job.user_id) == (JobKind.FORK, fork_id, "alice")
    with pytest.raises(RunQueued):  # not started yet: nothing to fork from it
        await agent.fork(fork_id, at=0)
    assert await advance(agent, fleet_queue(runtime), job) == Advanced.STARTED
    record = await runtime.load_run(fork_id)
    assert record.status == RunStatus.COMPLETED and record.recoveries == 0
    assert record.result["output"] == "answer to slow source"
    assert record.parent_run_id == source.run_id
    assert await advance(agent, fleet_queue(runtime), job) == Advanced.NOTHING  # picked again
    ledger = await sql(f"SELECT count(*) FROM {pg_schema}.ledger WHERE run_id = $1", fork_id)
    assert ledger[0][0] == 3  # the calls after checkpoint 1 (the first turn): a, b, then c


async def test_a_fork_a_worker_starts_keeps_its_trace_and_its_resume_links_to_it(
    env: dict[str, str], pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fork `submit_fork` journals queued has no span yet: the worker's start journals the
    trace of the fork's first run span, and the fork's resume links to that span."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from loomgraph.observability import RUN_SPAN, LinkKind, OTelTelemetry

    monkeypatch.setenv("FLEET_ASK", "1")  # the third call waits: the fork stops there
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traced = fleet_agent.make(telemetry=OTelTelemetry(provider))
    source = await traced.run("source", user_id="alice")
    assert source.status == RunStatus.AWAITING_APPROVAL, source.reason
    fork_id = await traced.submit_fork(source.run_id, at=1)
    queue = fleet_queue(traced.deps.runtime)
    job = RunJob(fork_id, JobKind.FORK, user_id="alice")
    assert await advance(traced, queue, job) == Advanced.STARTED
    fork_spans = [s for s in exporter.get_finished_spans() if s.name == RUN_SPAN][1:]
    [started] = fork_spans
    assert started.context is not None and not started.links
    record = await traced.deps.runtime.load_run(fork_id)
    assert record.status == RunStatus.AWAITING_APPROVAL and record.initial is not None
    assert record.initial.trace is not None
    assert record.initial.trace.split("-")[1:3] == [
        f"{started.context.trace_id:032x}",
        f"{started.context.span_id:016x}",
    ]
    # Its job, run above by hand, ends as a worker ends it: out of the queue (while it
    # is queued, an answer by hand is refused: `RunJobPending`).
    async with traced.deps.runtime.transaction() as con:  # type: ignore[attr-defined]
        await con.execute(f'DELETE FROM "{queue.schema}".pgqueuer WHERE dedupe_key = $1', fork_id)
    done = await traced.resume(fork_id, approve=True)
    assert done.status == RunStatus.COMPLETED, done.reason
    resumed = [s for s in exporter.get_finished_spans() if s.name == RUN_SPAN][-1]
    [link] = resumed.links
    assert link.context.span_id == started.context.span_id
    assert dict(link.attributes or {}) == {"loom.link.kind": LinkKind.RUN_START.value}


async def test_a_fork_job_for_a_run_that_is_no_fork_fails_it_as_unusable(
    agent: Any, env: dict[str, str]
) -> None:
    run_id = await agent.submit("never a fork", user_id="alice")
    job = RunJob(run_id, JobKind.FORK, user_id="alice")
    assert await advance(agent, fleet_queue(agent.deps.runtime), job) == Advanced.FAILED
    record = await agent.deps.runtime.load_run(run_id)
    assert record.status == RunStatus.FAILED and record.reason.startswith("JobUnusable: ")


def test_an_older_worker_puts_a_fork_job_back_for_a_newer_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fork job holds only fields every version knows: a worker of the version before
    # fork jobs reads it as a newer version's kind (put back, the run waits queued), never
    # as a broken job (which would fail the run).
    payload = RunJob("r1", JobKind.FORK, user_id="u", agent="a").encode()
    data = json.loads(payload)
    assert set(data) <= {"run_id", "kind", "user_id", "prompt", "session_id"} | {
        "output_schema",
        "output_retries",
        "answer",
        "agent",
    }
    monkeypatch.setattr(fleet_module, "JobKind", BeforeForks)
    with pytest.raises(JobFromNewerVersion, match="kind this loomgraph does not know"):
        RunJob.decode(payload)
