"""Takeover with real processes: a SIGKILLed worker's lease is taken over at once on its host,
and a SIGSTOPped worker that lost its lease (a zombie) never changes the run once it goes on.

Both on SQLite files and on the Postgres server, with `crash_worker.py` (see its docstring).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import pg
from background_process import BackgroundProcess
from loomgraph.agent import leases
from loomgraph.governance.ledger_sites import ledger_at
from test_crash_matrix import (
    PATH,
    Journal,
    journal_view,
    ledger_lines,
    run_worker,
    suffix,
)

WORKER = str(Path(__file__).with_name("crash_worker.py"))
pg_schema = pg.pg_schema
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Journal:
    """A fresh journal on each backend."""
    if request.param == "sqlite":
        return Journal(f"sqlite:{tmp_path / 'journal.db'}")
    return Journal(pg.postgres_dsn(), request.getfixturevalue("pg_schema"))


# --------------------------------------------------------------------------- dead owners


def test_owner_is_dead_only_for_a_gone_process_of_this_host() -> None:
    me = f"{leases._HOST}:{os.getpid()}:{leases.process_start(os.getpid())}:n"
    assert not leases.owner_is_dead(me)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(60)  # reaped: its pid names no process now (or a later, different one)
    start = leases.process_start(os.getpid())
    assert start is not None
    gone = f"{leases._HOST}:{child.pid}:1@{start.partition('@')[2]}:n"
    assert leases.owner_is_dead(gone)
    reused = f"{leases._HOST}:{os.getpid()}:1@{start.partition('@')[2]}:n"  # pid reused
    assert leases.owner_is_dead(reused)
    assert not leases.owner_is_dead(f"elsewhere:{child.pid}:1@{start.partition('@')[2]}:n")
    assert not leases.owner_is_dead(f"{leases._HOST}:{child.pid}:1@otherboot.1:n")
    assert leases.owner_is_dead(f"{leases._HOST}:{child.pid}:n")  # pid-only owners
    assert not leases.owner_is_dead("worker-a")


def test_a_stopped_process_is_not_dead() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        os.kill(child.pid, signal.SIGSTOP)
        start = leases.process_start(child.pid)
        assert start is not None
        assert not leases.owner_is_dead(f"{leases._HOST}:{child.pid}:{start}:n")
    finally:
        os.kill(child.pid, signal.SIGCONT)
        child.communicate(b"", timeout=60)


async def test_resume_right_after_sigkill_takes_the_dead_workers_lease(
    journal: Journal, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.tsv"
    crashed = run_worker(journal, ledger, "run", "--point", "after_effect", "--n", "2")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    run_id, pid = crashed.lines[0]["run_id"], crashed.lines[0]["pid"]
    runtime: Any = journal.open()
    try:
        lease = await runtime.lease(run_id)  # the dead worker's, live for another ~30 s
        assert lease is not None and f":{pid}:" in lease.owner and lease.token == 1
    finally:
        await runtime.close()
    resumed = run_worker(journal, ledger, "resume", "--run-id", run_id)  # no wait, no flag
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.last("result")["result"]["status"] == "completed"
    view = await journal_view(journal, run_id)
    assert [(t.node, t.visit) for t in view["transitions"]] == PATH


# --------------------------------------------------------------------------- zombies


class Background(BackgroundProcess):
    """A crash-matrix worker in the background, on `journal` with its ledger file."""

    def __init__(self, journal: Journal, ledger: Path, *args: str) -> None:
        super().__init__([sys.executable, WORKER, *args, *journal.args(), "--ledger", str(ledger)])


async def expire_lease(journal: Journal, run_id: str) -> None:
    """Move the run's lease into the past, as if its holder had been stopped that long."""
    if journal.spec.startswith("sqlite:"):
        raw = sqlite3.connect(journal.spec.removeprefix("sqlite:"), timeout=30)
        with raw:
            raw.execute("UPDATE leases SET expires_at = 0 WHERE run_id = ?", (run_id,))
        raw.close()
        return
    import asyncpg

    con = await asyncpg.connect(journal.spec)
    try:
        await con.execute(
            f'UPDATE "{journal.schema}".leases SET expires_at = 0 WHERE run_id = $1', run_id
        )
    finally:
        await con.close()


async def snapshot(journal: Journal, run_id: str) -> dict[str, Any]:
    """Everything a zombie could change: the record, transitions, effects, the lease."""
    view = await journal_view(journal, run_id)
    record = view["record"]
    return {
        "status": record.status,
        "reason": record.reason,
        "result": record.result,
        "updated_at": record.updated_at,
        "transitions": [(t.seq, t.node, t.visit, t.patch) for t in view["transitions"]],
        "effects": {k: (e.status, e.attempts, e.outcome) for k, e in view["effects"].items()},
        "state": view["state"],
    }


@pytest.mark.parametrize("wake", ["renewal", "tool"])
async def test_a_zombie_worker_never_changes_the_run_another_finished(
    journal: Journal, tmp_path: Path, wake: str
) -> None:
    """A holds the run (inside a tool), is SIGSTOPped past its lease; B takes the run over
    and completes it; A is continued. A gets LeaseLost and writes nothing: through its lease
    renewal (`renewal`) or through the fenced outcome of the tool it was in (`tool`)."""
    ledger = tmp_path / "ledger.tsv"
    a = Background(journal, ledger, "run", "--hold", "--lease-seconds", "6")
    run_id = a.expect("run_id")["run_id"]
    holding = a.expect("holding")["holding"]
    os.kill(a.process.pid, signal.SIGSTOP)
    try:
        await expire_lease(journal, run_id)
        b = run_worker(journal, ledger, "resume", "--run-id", run_id)
        assert b.returncode == 0, b.stderr
        assert b.last("result")["result"]["status"] == "completed"
        done = await snapshot(journal, run_id)
        ledger_done = ledger_lines(ledger)
    finally:
        os.kill(a.process.pid, signal.SIGCONT)
    if wake == "tool":
        assert a.process.stdin is not None
        a.process.stdin.write("go\n")  # one held tool goes on, acts, and journals its outcome
        a.process.stdin.flush()
    lost = a.expect("lease_lost")
    code, err = a.finish()
    assert code == 4, err
    assert "lease" in lost["lease_lost"]
    assert await snapshot(journal, run_id) == done  # status, result, rows: all unchanged
    assert done["status"] == "completed" and done["transitions"][-1][0] == len(PATH)
    extra = ledger_lines(ledger)[len(ledger_done) :]
    if wake == "renewal":
        assert extra == []
    else:  # the zombie's held tool acted (under its idempotency key), but journaled nothing
        assert {k for k, _ in extra} <= {holding, *(k for k, _ in ledger_done if "tools:1:" in k)}
    counts = Counter(k for k, _ in ledger_done)
    assert {suffix(run_id, k) for k in counts} == {"tools:1:1", "tools:1:2", "tools:2:1"}
    runtime: Any = journal.open()
    try:
        lease = await runtime.lease(run_id)
        assert lease is None  # B released it; A's release (another owner) changed nothing
    finally:
        await runtime.close()


async def ledger_view(journal: Journal, run_id: str) -> tuple[list[Any], dict[str, int]]:
    """The run's open holds (id, amounts) and what the ledger counts as spent overall."""
    runtime: Any = journal.open()
    ledger = ledger_at(runtime.ledger_site)
    try:
        holds = [(h.id, dict(h.amounts)) for h in await ledger.holds(run_id)]
        spent = dict((await ledger.totals("global")).spent)
    finally:
        await ledger.close()
        await runtime.close()
    return holds, spent


async def crash_charges(journal: Journal, run_id: str) -> list[dict[str, int]]:
    """The amounts of the run's holds charged because their process was taken for dead."""
    runtime: Any = journal.open()
    ledger = ledger_at(runtime.ledger_site)
    try:
        return [dict(c.amounts) for c in await ledger.charges(run_id)]
    finally:
        await ledger.close()
        await runtime.close()


async def test_a_zombie_worker_never_touches_the_new_owners_budget(
    journal: Journal, tmp_path: Path
) -> None:
    """A holds the run inside a tool and is SIGSTOPped past its lease; B takes the run over
    and is inside a tool of its own when A is continued. A's tool acts (it was running) and
    A stops at LeaseLost: B's holds stay as they were, and every tool that ran is charged
    once — A's through the crash charge B made for A's hold, not a second time by A."""
    ledger = tmp_path / "ledger.tsv"
    a = Background(journal, ledger, "run", "--hold", "--lease-seconds", "6", "--budget")
    run_id = a.expect("run_id")["run_id"]
    a.expect("holding")
    a.expect("holding")  # the first step's two tool calls, each holding its budget
    os.kill(a.process.pid, signal.SIGSTOP)
    try:
        await expire_lease(journal, run_id)
        b = Background(journal, ledger, "resume", "--run-id", run_id, "--hold", "--budget")
        b.expect("holding")
        b.expect("holding")
        held_by_b = await ledger_view(journal, run_id)
        assert held_by_b[0], "B holds its node visit and its tool call"
    finally:
        os.kill(a.process.pid, signal.SIGCONT)
    assert a.process.stdin is not None
    a.process.stdin.write("go\n")  # A's tool acts, then A settles and meets LeaseLost
    a.process.stdin.flush()
    a.expect("lease_lost")
    code, err = a.finish()
    assert code == 4, err
    assert await ledger_view(journal, run_id) == held_by_b  # nothing of B's touched
    run_by_a = len(ledger_lines(ledger))
    code, err = b.finish()
    assert code == 0, err
    holds, spent = await ledger_view(journal, run_id)
    assert holds == []
    # B settled the three tool calls it ran; A's two holds were charged in full when B took
    # the run over (A's outcome unknown then: one ran, one was waiting), and A's own
    # settlements afterwards added nothing.
    run_by_b = len(ledger_lines(ledger)) - run_by_a
    charged = sum(c.get("tool_calls", 0) for c in await crash_charges(journal, run_id))
    assert (run_by_a, run_by_b, charged) == (1, 3, 2)
    assert spent["tool_calls"] == run_by_b + charged
