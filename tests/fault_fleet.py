"""`loomgraph worker` subprocesses of `fault_agent` for the fleet fault tests, on a private
Postgres schema: the environment, a launcher whose workers' logs go to files the tests read,
bounded waits and SQL straight to the server."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
from pathlib import Path

import fleet_agent
import pg
from test_fleet import sql, wait_until_ready

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"
CLI = [sys.executable, "-m", "loomgraph.cli.main"]


async def fleet_env(schema: str, tmp_path: Path, **values: str) -> dict[str, str]:
    """The environment of a test and of its workers (also set in `os.environ`, which the
    test's own agent reads: the caller restores it), with the ledger tables made."""
    for ddl in fleet_agent.LEDGER_DDL:
        await sql(ddl.format(s=schema))
    env = {
        "FLEET_DSN": pg.postgres_dsn(),
        "FLEET_SCHEMA": schema,
        "FLEET_TURN_MS": "20",
        "FLEET_MAX_RECOVERIES": "2",
        "FAULT_ONCE": str(tmp_path / "died-once"),
        "PYTHONPATH": f"{SRC}:{TESTS}",
        **values,
    }
    os.environ.update(env)
    return dict(os.environ)


class Workers:
    """`loomgraph worker --agent fault_agent:make` processes; each prints a ready line."""

    def __init__(self, env: dict[str, str], logs: Path, *args: str) -> None:
        self.env, self.logs, self.args = env, logs, args
        self.procs: list[subprocess.Popen[str]] = []
        self.lines: queue.Queue[tuple[int, str]] = queue.Queue()

    def start(self) -> subprocess.Popen[str]:
        """Start one worker and wait (bounded) until it takes jobs."""
        log = open(self.logs / f"worker-{len(self.procs)}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [*CLI, "worker", "--agent", "fault_agent:make", *self.args],
            env=self.env,
            cwd=self.logs,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()  # the child has its own copy
        self.procs.append(proc)
        wait_until_ready(proc, self.lines)
        return proc

    def log(self, proc: subprocess.Popen[str]) -> str:
        """What the worker logged so far."""
        return (self.logs / f"worker-{self.procs.index(proc)}.log").read_text()

    def dead(self) -> list[subprocess.Popen[str]]:
        return [p for p in self.procs if p.poll() is not None]

    def stop(self) -> None:
        """SIGTERM the workers left; each must exit 0 (it finishes the runs in hand)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                raise
