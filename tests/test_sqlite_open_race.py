"""Many connections and processes opening one new SQLite file at once (ledgers, journals, or
both in one file): every opening waits for the others within `busy_timeout`, the tables are
made once, and a lock held past `busy_timeout` is a typed error naming the file.

Each race is run on several new files in a row: one opening used to lose it (SQLite's
"database is locked" at once, busy_timeout notwithstanding) in about half of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from loomgraph._storage.sqlite_files import SqliteFileProblem
from loomgraph.governance import SqliteLedger
from loomgraph.runtime.errors import JournalUnavailable
from loomgraph.runtime.sqlite import SqliteRuntime

OPENERS = 8  # connections racing in one process
TRIALS = 12  # new files per race
LEDGER_TABLES = [
    "loom_budget_charges",
    "loom_budget_holds",
    "loom_budget_runs",
    "loom_budget_scopes",
]


def _tables(path: str) -> list[str]:
    """Every table in the file, each name as often as it is there."""
    with contextlib.closing(sqlite3.connect(path)) as raw:
        return sorted(
            str(r[0]) for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        )


def _journal_mode(path: str) -> str:
    with contextlib.closing(sqlite3.connect(path)) as raw:
        return str(raw.execute("PRAGMA journal_mode").fetchone()[0])


async def _journal_tables(tmp_path: Path) -> list[str]:
    """The tables a journal makes alone (as `_tables` lists them)."""
    async with SqliteRuntime(tmp_path / "alone.db") as rt:
        await rt.load_run("r")
    return _tables(str(tmp_path / "alone.db"))


def _failures(results: list[object]) -> list[str]:
    return [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]


async def test_ledgers_open_one_new_file_together(tmp_path: Path) -> None:
    for trial in range(TRIALS):
        path = str(tmp_path / f"ledger{trial}.db")
        ledgers = [SqliteLedger(path) for _ in range(OPENERS)]
        try:
            results = await asyncio.gather(
                *(ledger.totals("user:bob") for ledger in ledgers), return_exceptions=True
            )
        finally:
            for ledger in ledgers:
                await ledger.close()
        assert _failures(results) == [], f"new file {trial}"
        assert _tables(path) == LEDGER_TABLES
        assert _journal_mode(path) == "wal"


async def test_journals_and_ledgers_open_one_new_file_together(tmp_path: Path) -> None:
    # An Agent with `runtime="sqlite:PATH"` keeps its ledger in the journal's file.
    expected = sorted(await _journal_tables(tmp_path) + LEDGER_TABLES)
    for trial in range(TRIALS):
        path = str(tmp_path / f"shared{trial}.db")
        journals = [SqliteRuntime(path) for _ in range(OPENERS // 2)]
        ledgers = [SqliteLedger(path) for _ in range(OPENERS // 2)]
        try:
            results = await asyncio.gather(
                *(rt.load_run("r") for rt in journals),
                *(ledger.totals("user:bob") for ledger in ledgers),
                return_exceptions=True,
            )
        finally:
            for ledger in ledgers:
                await ledger.close()
            for rt in journals:
                await rt.close()
        assert _failures(results) == [], f"new file {trial}"
        assert _tables(path) == expected
        assert _journal_mode(path) == "wal"


# Opens the file named on each stdin line with three ledgers and a journal at once, and
# prints "ok" or what failed.
_OPENER = """
import asyncio, sys
from loomgraph.governance import SqliteLedger
from loomgraph.runtime.sqlite import SqliteRuntime

async def open_all(path):
    ledgers = [SqliteLedger(path) for _ in range(3)]
    journal = SqliteRuntime(path)
    try:
        results = await asyncio.gather(
            journal.load_run("r"), *(l.totals("user:bob") for l in ledgers),
            return_exceptions=True,
        )
    finally:
        for ledger in ledgers:
            await ledger.close()
        await journal.close()
    bad = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    return "; ".join(bad) or "ok"

async def main():
    print("ready", flush=True)
    for line in sys.stdin:
        print(await open_all(line.strip()), flush=True)

asyncio.run(main())
"""


def test_processes_open_one_new_file_together(tmp_path: Path) -> None:
    expected = sorted(asyncio.run(_journal_tables(tmp_path)) + LEDGER_TABLES)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPENER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    # Bounded: a process that hangs is killed, and its readline() then ends.
    watchdog = threading.Timer(120, lambda: [p.kill() for p in procs])
    watchdog.start()
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line == "ready\n", line + (p.stderr.read() if p.stderr else "")
        for trial in range(TRIALS):
            path = str(tmp_path / f"procs{trial}.db")
            for p in procs:  # released together: each opens it as soon as it reads the line
                assert p.stdin is not None
                p.stdin.write(path + "\n")
                p.stdin.flush()
            outcomes = []
            for p in procs:
                assert p.stdout is not None
                outcomes.append(p.stdout.readline().strip())
            assert outcomes == ["ok"] * len(procs), f"new file {trial}: {outcomes}"
            assert _tables(path) == expected
            assert _journal_mode(path) == "wal"
        for p in procs:  # end of input: each process ends
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
    finally:
        watchdog.cancel()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _hold(path: str, mode: str) -> sqlite3.Connection:
    """A connection holding `path` locked: in rollback mode, so that nobody may read
    ("exclusive"), or in WAL mode, so that nobody may write ("write")."""
    holder = sqlite3.connect(path, isolation_level=None)
    if mode == "write":
        holder.execute("PRAGMA journal_mode = WAL").fetchall()
        holder.execute("BEGIN IMMEDIATE")
    else:
        holder.execute("BEGIN EXCLUSIVE")
    return holder


@pytest.mark.parametrize("mode", ["exclusive", "write"])
async def test_a_ledger_waiting_past_busy_timeout_raises_a_typed_error_naming_the_file(
    tmp_path: Path, mode: str
) -> None:
    path = str(tmp_path / "held.db")
    holder = _hold(path, mode)
    ledger = SqliteLedger(path, busy_timeout=0.2)
    try:
        with pytest.raises(SqliteFileProblem) as info:
            await ledger.totals("user:bob")
    finally:
        holder.rollback()
        holder.close()
    assert info.value.kind == "unavailable"
    assert path in str(info.value) and "busy_timeout=0.2s" in str(info.value)
    # Nothing stays broken: the next use opens the file.
    assert (await ledger.totals("user:bob")).spent == {}
    await ledger.close()
    assert _tables(path) == LEDGER_TABLES


@pytest.mark.parametrize("mode", ["exclusive", "write"])
async def test_a_journal_waiting_past_busy_timeout_raises_journal_unavailable(
    tmp_path: Path, mode: str
) -> None:
    path = str(tmp_path / "held.db")
    holder = _hold(path, mode)
    rt = SqliteRuntime(path, busy_timeout=0.2)
    try:
        with pytest.raises(JournalUnavailable) as info:
            await rt.load_run("r")
    finally:
        holder.rollback()
        holder.close()
    assert path in str(info.value)
    assert await rt.load_run("r") is None
    await rt.close()


async def test_a_ledger_in_a_missing_directory_raises_a_typed_error_naming_the_file(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "missing" / "ledger.db")
    ledger = SqliteLedger(path)
    with pytest.raises(SqliteFileProblem) as info:
        await ledger.totals("user:bob")
    assert info.value.kind == "unavailable" and path in str(info.value)
    await ledger.close()
