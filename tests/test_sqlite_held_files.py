"""A second connection to an SQLite file a process already has open keeps the first one's
locks: the checks that read the file directly (`check_sqlite_file`, `lost_wal_frames`) leave
a file this process holds alone, since closing any descriptor of a file drops every POSIX lock
the process holds on it. Without its locks a process's connections lost the file: another
process, closing, took itself for the last user, checkpointed and deleted the `-wal` and
`-shm`, and from then on this process read a frozen snapshot (a revoked API key stayed valid
in a running server) and wrote a log no other process read.

"Another process" is a real one here: connections within one process share their locks.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loomgraph._storage import sqlite_held
from loomgraph._storage.sqlite_files import check_sqlite_file, open_sqlite
from loomgraph._storage.sqlite_held import GuardedConnection, held_here
from loomgraph._storage.sqlite_wal_loss import lost_wal_frames
from loomgraph.protocols import RunRecord, RunStatus
from loomgraph.runtime.sqlite import SqliteRuntime

_OTHER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
print(db.execute(sys.argv[2], sys.argv[3:]).fetchall())
db.close()
"""


def other_process(path: Path, sql: str, *args: str) -> str:
    """Run one statement in another process, which then closes the file: its answer."""
    done = subprocess.run(
        [sys.executable, "-c", _OTHER, str(path), sql, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def _record(run_id: str) -> RunRecord:
    return RunRecord(run_id, "g", "h", user_id="u", session_id="s")


def locks_of_this_process(path: Path) -> set[tuple[str, str]]:
    """(file, first byte) of every POSIX lock this process holds on the database's files."""
    files = {}
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            files[os.stat(f"{path}{suffix}").st_ino] = suffix or "db"
    held = set()
    with open("/proc/locks") as table:
        for line in table:
            fields = line.split()
            if fields[1] == "POSIX" and int(fields[4]) == os.getpid():
                inode = int(fields[5].split(":")[2])
                if inode in files:
                    held.add((files[inode], fields[6]))
    return held


async def _open_second(path: Path) -> None:
    conn = await open_sqlite(str(path), busy_timeout=5.0, verify=True)
    await conn.close()


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="reads Linux's /proc/locks")
@pytest.mark.parametrize(
    "read",
    [
        lambda path: check_sqlite_file(str(path)),
        lambda path: lost_wal_frames(str(path)),
        _open_second,
    ],
    ids=["check_sqlite_file", "lost_wal_frames", "a second connection"],
)
async def test_checking_a_file_this_process_holds_keeps_its_locks(
    tmp_path: Path, read: Callable[[Path], Any]
) -> None:
    path = tmp_path / "journal.db"
    async with SqliteRuntime(path) as rt:
        await rt.start_run(_record("r1"))
        before = locks_of_this_process(path)
        # The SHARED lock on the database, and the -shm's "someone uses me" lock.
        assert {kind for kind, _ in before} == {"db", "-shm"}
        assert held_here(str(path))
        answer = read(path)
        if answer is not None and hasattr(answer, "__await__"):
            await answer
        assert locks_of_this_process(path) == before


async def test_after_a_second_connection_other_processes_changes_are_read_and_ours_are_seen(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.db"
    async with SqliteRuntime(path) as rt:
        await rt.start_run(_record("r1"))
        await _open_second(path)  # as a key store or memory beside the journal does
        other_process(path, "UPDATE runs SET status = 'cancelled' WHERE run_id = 'r1'")
        assert os.path.exists(f"{path}-wal")  # the other process did not take itself for last
        changed = await rt.load_run("r1")
        assert changed is not None and changed.status == RunStatus.CANCELLED
        await rt.start_run(_record("r2"))
        seen = other_process(path, "SELECT status FROM runs WHERE run_id = ?", "r2")
        assert seen == "[('running',)]"


def test_a_file_nobody_here_holds_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "not.db"
    assert not held_here(str(path))
    path.write_bytes(b"not a database at all, and not 100 bytes long")
    assert not held_here(str(path))
    with pytest.raises(Exception, match="no SQLite header"):
        check_sqlite_file(str(path))


def test_no_connection_opens_while_a_check_reads_a_file(tmp_path: Path) -> None:
    """A descriptor opened during a check could take a lock the check's close would drop:
    a `GuardedConnection` (every connection loomgraph opens) waits for the check."""
    path = tmp_path / "journal.db"
    opened = threading.Event()

    def connect() -> None:
        sqlite3.connect(path, factory=GuardedConnection).close()
        opened.set()

    with sqlite_held._DIRECT_READS:  # as `check_sqlite_file` holds it while it reads
        thread = threading.Thread(target=connect)
        thread.start()
        assert not opened.wait(0.2)
    assert opened.wait(60)
    thread.join()
