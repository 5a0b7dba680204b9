"""Journal writes and budget-ledger transactions on the loop's thread: made at once when the
write lock is free, handed to the worker thread (and waited for there) when another writer
holds it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from loomgraph._storage.sqlite_inline import InlineWriter
from loomgraph.governance import BudgetConfig, Caps, StandardBudget
from loomgraph.governance.ledger_sites import ledger_at
from loomgraph.governance.sqlite_ledger import SqliteLedger
from loomgraph.protocols import (
    BudgetExceeded,
    BudgetScope,
    Reservation,
    RunRecord,
    Transition,
    Usage,
)
from loomgraph.runtime.sqlite import SqliteRuntime


def _transition(seq: int) -> Transition:
    return Transition("r1", seq, "model", seq, {"x": seq}, "tools", Usage(), time.time(), None)


def test_a_busy_write_lock_makes_the_inline_writer_write_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "inline.db")
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.execute("CREATE TABLE t (v INTEGER)")
    writer = InlineWriter(path, synchronous="NORMAL")
    assert writer.execute("INSERT INTO t VALUES (?)", (1,)) == 1
    setup.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    assert writer.execute("INSERT INTO t VALUES (?)", (2,)) is None
    setup.execute("COMMIT")
    assert [r[0] for r in setup.execute("SELECT v FROM t")] == [1]
    writer.close()
    setup.close()


async def test_a_journal_write_waits_for_another_writer_and_lands(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = SqliteRuntime(path)
    await journal.connect()
    await journal.start_run(RunRecord("r1", "g", "h", None, None))
    await journal.append_transition(_transition(1))  # lock free: written inline
    assert journal._inline is not None and journal._inline._conn is not None

    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    write = asyncio.create_task(journal.append_transition(_transition(2)))
    await asyncio.sleep(0.05)
    assert not write.done()  # waiting for the lock on the worker thread, loop free
    other.execute("COMMIT")
    await write
    other.close()
    assert [t.seq for t in await journal.transitions("r1")] == [1, 2]
    await journal.close()


def test_full_durability_and_memory_journals_write_nothing_inline(tmp_path: Path) -> None:
    assert SqliteRuntime(tmp_path / "full.db", synchronous="FULL")._inline is None
    assert SqliteRuntime(":memory:")._inline is None
    assert SqliteRuntime(tmp_path / "normal.db")._inline is not None


# ------------------------------------------------------------------ budget ledger transactions

SCOPE = BudgetScope("r1", "alice")


def _tool_call() -> Reservation:
    return Reservation(SCOPE, "tool", Usage(tool_calls=1))


def _budget(ledger: SqliteLedger) -> StandardBudget:
    return StandardBudget(BudgetConfig(per_user=Caps(tool_calls=2)), ledger)


def test_a_busy_write_lock_makes_an_inline_transaction_begin_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "inline.db")
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode = WAL")
    writer = InlineWriter(path, synchronous="NORMAL")
    setup.execute("BEGIN IMMEDIATE")
    assert writer.begin() is None
    setup.execute("COMMIT")
    conn = writer.begin()
    assert conn is not None and conn.in_transaction
    conn.execute("ROLLBACK")
    # Another thread (another event loop's) is never given this connection's transaction.
    other: list[object] = []
    thread = threading.Thread(target=lambda: other.append(writer.begin()))
    thread.start()
    thread.join()
    assert other == [None]
    writer.close()
    setup.close()


async def test_ledger_transactions_run_inline_and_a_refused_one_writes_nothing(
    tmp_path: Path,
) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.db", synchronous="NORMAL")
    budget = _budget(ledger)
    first = await budget.reserve(_tool_call())
    assert ledger._inline is not None and ledger._inline._conn is not None  # went inline
    await budget.reserve(_tool_call())
    with pytest.raises(BudgetExceeded, match="user:alice:tool_calls"):
        await budget.reserve(_tool_call())
    assert not ledger._inline._conn.in_transaction  # the refused one was rolled back
    await budget.settle(first, Usage(tool_calls=1))
    totals = await budget.totals("user:alice")
    assert (totals.spent, totals.reserved) == ({"tool_calls": 1}, {"tool_calls": 1})
    await budget.close()


async def test_a_ledger_transaction_waits_for_another_writer_and_lands(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = SqliteLedger(path, synchronous="NORMAL")
    budget = _budget(ledger)
    await budget.reserve(_tool_call())  # creates the tables
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    reserve = asyncio.create_task(budget.reserve(_tool_call()))
    await asyncio.sleep(0.05)
    assert not reserve.done()  # waiting for the lock on the worker thread, loop free
    other.execute("COMMIT")
    await reserve
    other.close()
    assert (await budget.totals("user:alice")).reserved == {"tool_calls": 2}
    await budget.close()


@pytest.mark.parametrize(("synchronous", "level"), [("NORMAL", 1), ("FULL", 2)])
async def test_ledger_durability_is_its_own_and_full_commits_off_the_loop(
    tmp_path: Path, synchronous: str, level: int
) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.db", synchronous=synchronous)  # type: ignore[arg-type]
    budget = _budget(ledger)
    loop_thread = threading.get_ident()
    committed_on: list[int] = []
    assert ledger._inline is not None
    conn = ledger._inline._open()
    conn.set_trace_callback(
        lambda sql: committed_on.append(threading.get_ident()) if sql == "COMMIT" else None
    )
    held = await budget.reserve(_tool_call())
    # NORMAL commits where the statements ran; FULL's commit (an fsync) on a worker thread.
    assert committed_on and (committed_on[0] == loop_thread) == (synchronous == "NORMAL")
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == level
    # Settling ends a hold: a power cut that lost it would leave the hold, charged in full at
    # recovery, so it is committed at NORMAL, on the loop's thread, whatever the ledger's level.
    committed_on.clear()
    await budget.settle(held, Usage(tool_calls=1))
    assert committed_on == [loop_thread]
    async with ledger._db.session() as db:
        rows = list(await db.execute_fetchall("PRAGMA synchronous"))
    assert rows[0][0] == level  # the worker thread's connection keeps the ledger's level
    totals = await budget.totals("user:alice")
    assert (totals.spent, totals.reserved) == ({"tool_calls": 1}, {})
    await budget.close()


def test_a_ledger_in_the_journal_file_is_fsynced_at_every_commit(tmp_path: Path) -> None:
    # A charge must survive a power cut even where the journal's last writes (NORMAL) do not.
    site = SqliteRuntime(tmp_path / "journal.db").ledger_site
    assert site is not None
    ledger = ledger_at(site)
    assert isinstance(ledger, SqliteLedger) and ledger.synchronous == "FULL"
    with pytest.raises(ValueError, match="synchronous must be"):
        SqliteLedger(tmp_path / "bad.db", synchronous="OFF")  # type: ignore[arg-type]


@pytest.mark.parametrize("busy_timeout", [float("nan"), float("inf"), -1, 0, "5", True, 1e-4])
def test_a_bad_busy_timeout_is_refused_where_it_is_given(tmp_path: Path, busy_timeout: Any) -> None:
    # SQLite keeps it as an int of milliseconds: NaN, an infinity or a negative failed at
    # first use or silently meant "never wait for another connection's lock".
    for store in (SqliteRuntime, SqliteLedger):
        with pytest.raises(ValueError, match="busy_timeout must be"):
            store(tmp_path / "x.db", busy_timeout=busy_timeout)
    assert not (tmp_path / "x.db").exists()
