"""What the worker fleet gives and costs: throughput of 1, 2 and 4 workers, and the queue's
added latency from submit to a run's first event.

    python bench/fleet.py [--dsn postgresql://postgres@127.0.0.1:5432/test] [--runs 80]
                          [--workers 1,2,4] [--concurrency 8] [--turn-ms 20] [--latency 15]

Each run is the `react` graph with 2 model turns of `--turn-ms` ms each (a model's latency,
spent in `asyncio.sleep`, so a worker overlaps many) and one no-op tool call: 2 transitions,
3 effects. For each worker count a fresh schema gets `--runs` runs submitted at once, with
`loomgraph worker` subprocesses (`--concurrency` each) already waiting, every run due at
the same moment (`run_at`, after all are submitted); the time is from that moment until
every run has completed. Latency: with one idle worker, the median
over `--latency` runs of submit → the run's first event read from the journal
(`agent.events`), next to the same run in-process (`agent.stream`, no queue).

The workers import this file (`--agent fleet:make`, from bench/).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from loomgraph import Agent
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest
from loomgraph.runtime.postgres import PostgresRuntime

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
CALL = {"tool_calls": [{"tool": "noop", "args": {"x": 1}}]}


async def noop(x: int) -> str:
    """Do nothing."""
    return "ok"


class PacedModel(ScriptedModel):
    """Two turns (a tool call, then the answer), each taking `BENCH_TURN_MS`."""

    async def stream(self, request: ModelRequest) -> Any:  # type: ignore[override]
        await asyncio.sleep(float(os.environ.get("BENCH_TURN_MS", "20")) / 1000)
        async for chunk in super().stream(request):
            yield chunk


def make(**overrides: Any) -> Agent:
    """The benchmark's agent on the journal `BENCH_DSN` / `BENCH_SCHEMA` name."""
    runtime = PostgresRuntime(
        os.environ["BENCH_DSN"], schema=os.environ["BENCH_SCHEMA"], pool_size=8
    )
    options: dict[str, Any] = {
        "model": PacedModel([CALL, "done"]),
        "tools": [noop],
        "runtime": runtime,
    }
    return Agent("bench", **{**options, **overrides})


async def _sql(dsn: str, statement: str) -> None:
    import asyncpg

    con = await asyncpg.connect(dsn)
    try:
        await con.execute(statement)
    finally:
        await con.close()


def _workers(n: int, concurrency: int) -> list[subprocess.Popen[str]]:
    env = dict(os.environ, PYTHONPATH=f"{SRC}:{HERE}")
    cmd = [sys.executable, "-m", "loomgraph.cli.main", "worker", "--agent", "fleet:make"]
    cmd += ["--concurrency", str(concurrency), "--poll", "0.5", "--log-level", "error"]
    procs = [
        subprocess.Popen(cmd, env=env, cwd=HERE, stdout=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "ready", or "" if it died
        if "ready" not in line:
            raise SystemExit(f"a worker did not start (exit {proc.wait(timeout=30)})")
    return procs


def _cpu_of(pid: int) -> int:
    """Clock ticks of CPU (user + system) process `pid` used so far (Linux /proc); 0 when
    it is gone or not ours to read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15


def _cpu(procs: list[subprocess.Popen[str]]) -> float:
    """CPU seconds the processes used so far."""
    return sum(_cpu_of(p.pid) for p in procs) / os.sysconf("SC_CLK_TCK")


def _postgres_cpu() -> float:
    """CPU seconds every `postgres` process on this machine used so far (0 when the server
    is elsewhere): the database's share of a run, when it runs here."""
    total = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() != "postgres":
                        continue
            except OSError:
                continue
            total += _cpu_of(int(entry))
    return total / os.sysconf("SC_CLK_TCK")


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=120)


async def throughput(
    dsn: str, workers: int, runs: int, concurrency: int
) -> tuple[float, float, float]:
    """Runs per second with `workers` worker processes, and the CPU seconds per run (user +
    system, while the runs were advanced) of the workers and of Postgres (all its processes
    on this machine, other users' work included)."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    await _sql(dsn, f"CREATE SCHEMA {schema}")
    os.environ["BENCH_SCHEMA"] = schema
    agent = make()
    try:
        await agent.submit("warm up the queue tables")  # installs the queue before timing
        procs = _workers(workers, concurrency)
        try:
            await agent.wait((await agent.submit("first")), timeout=120)
            # Every run is due at one moment, after all are submitted: the time measured is
            # the fleet's, not the submitting loop's.
            due = time.time() + 2.0 + runs * 0.02
            ids = [await agent.submit(f"run {i}", user_id=f"u{i}", run_at=due) for i in range(runs)]
            if time.time() > due:
                raise SystemExit("submitting took longer than planned; use fewer --runs")
            await asyncio.sleep(due - time.time())
            cpu, db = _cpu(procs), _postgres_cpu()
            started = time.perf_counter()
            for run_id in ids:
                await agent.wait(run_id, timeout=600, poll_interval=0.01)
            rate = runs / (time.perf_counter() - started)
            cpu, db = _cpu(procs) - cpu, _postgres_cpu() - db
        finally:
            _stop(procs)
        return rate, cpu / runs, db / runs
    finally:
        await agent.aclose()
        await _sql(dsn, f"DROP SCHEMA {schema} CASCADE")


async def latency(dsn: str, samples: int) -> tuple[float, float]:
    """Median seconds from submit to the first journaled event (one idle worker), and from
    `agent.stream` to its first event in-process."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    await _sql(dsn, f"CREATE SCHEMA {schema}")
    os.environ["BENCH_SCHEMA"] = schema
    agent = make()
    queued: list[float] = []
    local: list[float] = []
    try:
        await agent.submit("warm up")
        procs = _workers(1, 8)
        try:
            for i in range(samples):
                t0 = time.perf_counter()
                run_id = await agent.submit(f"latency {i}")
                async for _ in agent.events(run_id, poll_interval=0.005):
                    queued.append(time.perf_counter() - t0)
                    break
                await agent.wait(run_id, timeout=60)
                t0 = time.perf_counter()
                async for _ in agent.stream(f"local {i}"):
                    local.append(time.perf_counter() - t0)
                    break
        finally:
            _stop(procs)
    finally:
        await agent.aclose()
        await _sql(dsn, f"DROP SCHEMA {schema} CASCADE")
    return statistics.median(queued), statistics.median(local)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--runs", type=int, default=80)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--turn-ms", type=float, default=20.0)
    parser.add_argument("--latency", type=int, default=15)
    args = parser.parse_args()
    os.environ["BENCH_DSN"] = args.dsn
    os.environ["BENCH_TURN_MS"] = str(args.turn_ms)
    print(f"cores: {os.cpu_count()}; {args.runs} runs, 2 turns of {args.turn_ms} ms each")
    rates = {}
    for n in (int(x) for x in args.workers.split(",")):
        rates[n], cpu, db = await throughput(args.dsn, n, args.runs, args.concurrency)
        base = rates[min(rates)]
        print(
            f"{n} worker(s): {rates[n]:6.1f} runs/s  ({rates[n] / base:.2f}x one worker); "
            f"CPU per run: workers {cpu * 1000:.1f} ms, postgres {db * 1000:.1f} ms"
        )
    queued, local = await latency(args.dsn, args.latency)
    print(
        f"submit -> first event: {queued * 1000:.0f} ms via the queue, {local * 1000:.0f} ms "
        f"in-process ({queued / local:.1f}x)"
    )


if __name__ == "__main__":
    asyncio.run(main())
