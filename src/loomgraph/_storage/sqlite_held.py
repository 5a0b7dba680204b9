"""Whether this process holds an SQLite file open, and the lock around reading one directly.

The checks (`sqlite_files.check_sqlite_file`, `sqlite_wal_loss.lost_wal_frames`) read the
database file, its `-wal` and its `-shm` directly, and that is only safe while this process
has none of them open through SQLite. On Unix SQLite locks with POSIX record locks, which
belong to the process and the file, not to a descriptor: closing *any* descriptor of a file
drops every lock the process holds on it. SQLite keeps its own connections from doing that to
each other (it defers such a close), but it cannot know of a file opened with `open()`. A
check run while a connection of this process held the file would drop that connection's
SHARED lock on the database (another process closing the file then believes itself its last
user: it checkpoints, then deletes the `-wal` and `-shm` this process still uses, which then
reads a frozen snapshot and writes a log nobody else reads) and its lock on the `-shm`
(another process then rebuilds the index under it). So a file this process has open is not
read directly again (`held_here`: it was checked when it was first opened), and no
connection opened as a `GuardedConnection` opens while a check reads a file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

# Held while a check reads SQLite files directly, and while a `GuardedConnection` opens (its
# database file's descriptor appears then): a descriptor opened during a check could take a
# lock the check's close would drop. Reentrant: a check may open a connection itself.
_DIRECT_READS = threading.RLock()
# Where this process's open descriptors are listed (Linux; macOS and the BSDs).
_FD_DIRS = ("/proc/self/fd", "/dev/fd")


class GuardedConnection(sqlite3.Connection):
    """An sqlite3 connection (`sqlite3.connect(..., factory=GuardedConnection)`) that never
    opens while this process reads an SQLite file directly (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        with _DIRECT_READS:
            super().__init__(*args, **kwargs)


def held_here(path: str) -> bool:
    """Whether this process has a descriptor open on the database file `path`, its `-wal` or
    its `-shm` (then it may hold locks on them that a direct read's close would drop).

    False on Windows, whose locks belong to a handle (closing another one keeps them); True
    when the process's descriptors cannot be listed (nothing is then read directly)."""
    if os.name != "posix" or path == ":memory:":
        return False
    files = set()
    for name in (path, path + "-wal", path + "-shm"):
        with contextlib.suppress(OSError):
            st = os.stat(name)
            files.add((st.st_dev, st.st_ino))
    if not files:
        return False  # none of them exists: no descriptor can refer to them
    for fd_dir in _FD_DIRS:
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.fstat(int(fd))
            except (OSError, ValueError):
                continue  # closed meanwhile (the listing's own descriptor too)
            if (st.st_dev, st.st_ino) in files:
                return True
        return False
    return True


@contextlib.contextmanager
def direct_reads(path: str) -> Iterator[bool]:
    """Around reading `path`'s files directly: whether that is safe (nothing of this process
    holds them), with no `GuardedConnection` opening meanwhile."""
    with _DIRECT_READS:
        yield not held_here(path)
