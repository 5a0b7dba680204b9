"""One-statement journal writes on the loop's thread: made at once when the write lock is
free, handed to the worker thread (and waited for there) when another writer holds it."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from loomgraph._storage.sqlite_inline import InlineWriter
from loomgraph.protocols import RunRecord, Transition, Usage
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
