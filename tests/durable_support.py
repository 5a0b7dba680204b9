"""Helpers of the durability tests that run tests/durable_probe_worker.py: a worker run to its
end (or its own SIGKILL at a named point), one in the background, the audit actions of a run,
a lease moved into the past."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from background_process import BackgroundProcess
from loomgraph.observability import FileAuditLog

WORKER = str(Path(__file__).with_name("durable_probe_worker.py"))


def run_worker(where: Path, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    """Run the worker to its end (its own SIGKILL included): exit code, JSON lines, stderr."""
    done = subprocess.run(
        [sys.executable, WORKER, args[0], str(where), *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return done.returncode, lines, done.stderr


def audit_actions(where: Path, run_id: str) -> list[str]:
    """The actions of the run's audit entries, in order."""
    log = FileAuditLog(where / "audit.jsonl", unsigned=True)
    return [e["action"] for e in log.entries(run_id=run_id)]


def crashed_at(where: Path, point: str) -> str:
    """Run the worker, SIGKILLed at `point`; the run's id."""
    code, lines, err = run_worker(where, "run", point)
    assert code == -signal.SIGKILL, err
    assert lines[-1] == {"crash": point}, lines
    return str(lines[0]["run_id"])


class Background(BackgroundProcess):
    """The durability worker in the background, in folder `where`."""

    def __init__(self, where: Path, *args: str) -> None:
        super().__init__([sys.executable, WORKER, args[0], str(where), *args[1:]])


def expire_lease(journal: Path, run_id: str) -> None:
    """Move the run's lease into the past, as if its holder had been stopped that long."""
    raw = sqlite3.connect(journal, timeout=30)
    with raw:
        raw.execute("UPDATE leases SET expires_at = 0 WHERE run_id = ?", (run_id,))
    raw.close()


@contextlib.contextmanager
def taken_over(where: Path, point: str, at: str) -> Iterator[tuple[Background, str]]:
    """Worker A runs to `point`, says `at` and is SIGSTOPped past its lease; worker B resumes
    the run and completes it. Yields A (stopped) and the run's id; A goes on (SIGCONT) after."""
    a = Background(where, "run", point)
    run_id = a.expect("run_id")["run_id"]
    a.expect(at)
    os.kill(a.process.pid, signal.SIGSTOP)
    try:
        expire_lease(where / "journal.db", run_id)
        code, lines, err = run_worker(where, "resume", run_id)
        assert code == 0, err
        assert lines[-1]["result"]["status"] == "completed"
        yield a, run_id
    finally:
        os.kill(a.process.pid, signal.SIGCONT)


def refused_in_the_end(a: Background, *, release: bool) -> None:
    """The stopped worker A, gone on (its held step `release`d through stdin), meets the
    lease it lost and exits 4."""
    if release:
        assert a.process.stdin is not None
        a.process.stdin.write("go\n")
        a.process.stdin.flush()
    a.expect("lease_lost")
    code, err = a.finish()
    assert code == 4, err
