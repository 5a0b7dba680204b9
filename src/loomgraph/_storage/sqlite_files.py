"""SQLite files as every SQLite backend opens them: checked before use, then put in WAL mode.

Shared by the SQLite journal, memory and budget ledger, which must not import one another;
each turns `SqliteFileProblem` into its own typed error.

The checks read the database file, its `-wal` and its `-shm` directly, and that is only safe
while this process has none of them open through SQLite. On Unix SQLite locks with POSIX
record locks, which belong to the process and the file, not to a descriptor: closing *any*
descriptor of a file drops every lock the process holds on it. SQLite keeps its own
connections from doing that to each other (it defers such a close), but it cannot know of a
file opened with `open()`. A check run while a connection of this process held the file would
drop that connection's SHARED lock on the database (another process closing the file then
believes itself its last user: it checkpoints, then deletes the `-wal` and `-shm` this
process still uses, which then reads a frozen snapshot and writes a log nobody else reads)
and its lock on the `-shm` (another process then rebuilds the index under it). So a file this
process has open is not read directly again (`held_here`: it was checked when it was first
opened), and no connection opened through this module (`GuardedConnection`) opens while a
check reads a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import struct
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple

import aiosqlite

from loomgraph.errors import LoomgraphError

_HEADER = b"SQLite format 3\x00"

# SQLite's `synchronous` levels loomgraph uses with WAL: at NORMAL a commit survives the
# process's death; at FULL also a power cut, at the cost of an fsync per commit.
Synchronous = Literal["NORMAL", "FULL"]


def checked_synchronous(level: Synchronous) -> Synchronous:
    """`level`, or ValueError when it is not one of the two."""
    if level not in ("NORMAL", "FULL"):
        raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', not {level!r}")
    return level


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
def _direct_reads(path: str) -> Iterator[bool]:
    """Around reading `path`'s files directly: whether that is safe (nothing of this process
    holds them), with no `GuardedConnection` opening meanwhile."""
    with _DIRECT_READS:
        yield not held_here(path)


class SqliteFileProblem(LoomgraphError):
    """A file that cannot be opened as an SQLite database, and whether it is damaged."""

    def __init__(
        self, kind: Literal["unavailable", "corrupted"], message: str, integrity: str = ""
    ) -> None:
        super().__init__(message)
        self.kind = kind
        # What `PRAGMA quick_check` said of the file (or why it could not run); "" if unasked.
        self.integrity = integrity
        self.loss: WalLoss | None = None  # set when committed WAL frames are what is missing


def integrity_of(path: str, *, immutable: bool = False, busy_timeout: float | None = None) -> str:
    """`PRAGMA quick_check` of a file, on a read-only connection: "ok", the problems found,
    or the error that kept it from running. Never writes the database file; a read-only
    connection may create an empty `-wal`/`-shm` beside it. `immutable` reads the main file
    alone (ignoring `-wal`/`-shm`) and creates nothing.

    With `busy_timeout`, another connection's lock is waited for that long, and one held
    longer raises SqliteFileProblem("unavailable"): a locked file is not a damaged one.
    """
    uri = Path(path).absolute().as_uri() + ("?immutable=1" if immutable else "?mode=ro")
    try:
        conn = sqlite3.connect(
            uri,
            uri=True,
            timeout=5.0 if busy_timeout is None else busy_timeout,
            factory=GuardedConnection,
        )
    except sqlite3.Error as err:
        return f"cannot open: {err}"
    try:
        rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check(5)")]
        return "; ".join(rows).replace("\n", "; ")
    except sqlite3.Error as err:
        if busy_timeout is not None and is_busy(err):
            raise SqliteFileProblem("unavailable", locked_for_too_long(err, busy_timeout)) from None
        return f"quick_check failed: {err}"
    finally:
        conn.close()


# SQLite's answers (`sqlite_errorname` prefixes) that say the file cannot be used now, not
# that a statement or the file is wrong: another connection's lock (held past busy_timeout),
# or a file that cannot be opened, read or written (I/O, permissions, a full disk).
BUSY_ERRORS = ("SQLITE_BUSY", "SQLITE_LOCKED")
# And those that say the file itself is damaged, or no database.
CORRUPT_ERRORS = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
UNAVAILABLE_ERRORS = (
    *BUSY_ERRORS,
    "SQLITE_CANTOPEN",
    "SQLITE_IOERR",
    "SQLITE_READONLY",
    "SQLITE_FULL",
    "SQLITE_PERM",
    "SQLITE_AUTH",
)


def is_busy(err: sqlite3.Error) -> bool:
    """Whether SQLite refused for another connection's lock (so nothing was written)."""
    return getattr(err, "sqlite_errorname", "").startswith(BUSY_ERRORS)


def locked_for_too_long(err: sqlite3.Error, busy_timeout: float) -> str:
    return f"{err} for longer than busy_timeout={busy_timeout}s"


def unavailable_detail(err: sqlite3.Error, busy_timeout: float) -> str | None:
    """What to say when `err` means the file cannot be used now (a lock held past
    `busy_timeout`, a file that cannot be opened, read or written), else None."""
    if is_busy(err):
        return locked_for_too_long(err, busy_timeout)
    if getattr(err, "sqlite_errorname", "").startswith(UNAVAILABLE_ERRORS):
        return str(err)
    return None


def reads_as_damaged(err: sqlite3.Error) -> bool:
    """Whether `err` says a store's file is damaged, or not the store's at all (a table or
    column every such file has is missing)."""
    name = getattr(err, "sqlite_errorname", "")
    return name.startswith(CORRUPT_ERRORS) or str(err).startswith(
        ("no such table", "no such column")
    )


class WalLoss(NamedTuple):
    """Committed transactions the `-shm` records but the `-wal` beside it no longer holds."""

    foreign: bool  # the -wal is another one (not merely missing or cut short)
    detail: str


def lost_wal_frames(path: str) -> WalLoss | None:
    """Compare a database's `-shm` with its `-wal`, without opening either through SQLite.

    After a crash both stay behind: the `-shm` header says how many WAL frames are committed
    (mxFrame), how many are already copied into the database (nBackfill) and the WAL's salt.
    Frames beyond nBackfill live only in the `-wal`; when it is missing, shorter than they
    need, or carries another salt (another database's log), SQLite would open the file without
    them (or apply foreign pages), silently. None: nothing lost, or nothing to tell (no -shm,
    or the file is open in this process: its `-shm` is live, and reading it would drop this
    process's locks; see the module's docstring).
    """
    with _direct_reads(path) as safe:
        return _lost_wal_frames(path) if safe else None


def _lost_wal_frames(path: str) -> WalLoss | None:
    try:
        with open(path + "-shm", "rb") as f:
            shm = f.read(100)
    except OSError:
        return None  # no -shm: SQLite rebuilds it from the -wal, which loses nothing
    if len(shm) < 100 or shm[:48] != shm[48:96] or not shm[12]:
        return None  # never initialised, or mid-update by a live writer: nothing to claim
    version, _, _, _, _, page, frames = struct.unpack("=IIIBBHI", shm[:20])
    backfilled = struct.unpack("=I", shm[96:100])[0]
    if version != 3007000 or frames <= backfilled:
        return None  # everything committed is in the database file already
    page = page if page > 1 else 65536 if page == 1 else 0
    pending = frames - backfilled
    wal = path + "-wal"
    try:
        with open(wal, "rb") as f:
            head = f.read(32)
        size = os.path.getsize(wal)
    except FileNotFoundError:
        return WalLoss(
            False,
            f"{wal} is missing, but {path}-shm records {pending} committed "
            "WAL frame(s) not yet in the database: those transactions are lost",
        )
    except OSError as err:
        return WalLoss(False, f"{wal} cannot be read: {err.strerror or err}")
    if len(head) < 32 or head[16:24] != shm[32:40]:
        return WalLoss(
            True,
            f"{wal} does not belong to {path}-shm (another salt): it is not "
            f"the log of the {pending} committed frame(s) the -shm records",
        )
    need = 32 + frames * (24 + page)
    if page and size < need:
        return WalLoss(
            False,
            f"{wal} is cut short ({size} of {need} bytes): some of the "
            f"{pending} committed WAL frame(s) the -shm records are lost",
        )
    return None


def check_sqlite_file(path: str) -> None:
    """Refuse a file that is not an intact SQLite database before anything writes to it.

    A file this process has open already is not read again: it was checked when first
    opened, and reading it would drop this process's locks (see the module's docstring)."""
    with _direct_reads(path) as safe:
        if safe:
            _check_sqlite_file(path)


def _check_sqlite_file(path: str) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except FileNotFoundError:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise SqliteFileProblem("unavailable", f"directory {parent!r} does not exist") from None
        return  # a new file
    except OSError as err:
        raise SqliteFileProblem("unavailable", err.strerror or str(err)) from None
    if head and not head.startswith(_HEADER):
        raise SqliteFileProblem(
            "corrupted", "not an SQLite database (no SQLite header)", "not a database"
        )
    if 0 < len(head) < 100:
        raise SqliteFileProblem(
            "corrupted", f"truncated to {len(head)} bytes", integrity_of(path, immutable=True)
        )
    if head:
        # SQLite writes whole pages only; a partial last page means a cut-off file.
        page = int.from_bytes(head[16:18], "big")
        page = 65536 if page == 1 else page
        size = os.path.getsize(path)
        if page and size % page:
            raise SqliteFileProblem(
                "corrupted",
                f"truncated: {size} bytes is not a whole number of {page}-byte pages",
                integrity_of(path, immutable=True),
            )


async def enable_wal(conn: aiosqlite.Connection, busy_timeout: float) -> None:
    """Switch a file to WAL mode (the mode then stays with the file).

    The switch upgrades a read transaction to a write one, which SQLite never waits for
    (busy_timeout does not apply), so connections opening one new file together retry here,
    within `busy_timeout`. Each statement's rows are read to the end (see `execute_all`).
    """
    loop = asyncio.get_running_loop()
    deadline, delay = loop.time() + busy_timeout, 0.001
    statement = "PRAGMA journal_mode"  # first only look: the file may be WAL already
    while True:
        try:
            mode = str(next(iter(await conn.execute_fetchall(statement)))[0])
        except sqlite3.OperationalError as err:
            if not is_busy(err) or loop.time() > deadline:
                raise
            await asyncio.sleep(delay)  # another process holds the lock for a moment
            delay = min(delay * 2, 0.05)
            continue
        if mode.lower() == "wal":
            return
        if statement.endswith("WAL"):
            raise SqliteFileProblem("unavailable", f"cannot switch to WAL mode ({mode})")
        statement = "PRAGMA journal_mode = WAL"


async def connect_sqlite(path: str) -> aiosqlite.Connection:
    """A connection in autocommit mode (transactions are begun explicitly)."""
    conn = aiosqlite.connect(path, isolation_level=None, factory=GuardedConnection)
    # aiosqlite's worker thread is not a daemon: an unclosed store would keep the process
    # from exiting. Every write is committed when it returns, so nothing is lost.
    thread = getattr(conn, "_thread", None)
    if thread is not None:
        thread.daemon = True
    try:
        await conn
    except BaseException:
        # A file SQLite cannot open: aiosqlite stops its thread without waiting for it, and
        # a thread that ends after this event loop closed dies reporting to it.
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join, 5.0)
        raise
    return conn


async def execute_all(conn: aiosqlite.Connection, statements: Iterable[str]) -> None:
    """Run statements (tables, indexes) in one write transaction.

    Its `BEGIN IMMEDIATE` waits for another connection's write lock (busy_timeout) only when
    no earlier statement of `conn` is still unfinished: aiosqlite keeps a statement's cursor
    until the next statement has run, and a statement whose rows were not all read holds its
    read transaction that long — the BEGIN then upgrades it, and SQLite fails such an upgrade
    at once ("database is locked") rather than risk a deadlock. So every statement before
    this one that returns rows (a PRAGMA setting one too) is read with `execute_fetchall`.
    """
    await conn.execute("BEGIN IMMEDIATE")
    for statement in statements:
        await conn.execute(statement)
    await conn.execute("COMMIT")


async def set_busy_timeout(conn: aiosqlite.Connection, busy_timeout: float) -> None:
    """Wait up to `busy_timeout` seconds for another process's lock instead of failing."""
    # Its row is read, so the statement is finished before the next one (see execute_all).
    await conn.execute_fetchall(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")


def sqlite_problem(path: str, err: sqlite3.Error, busy_timeout: float) -> SqliteFileProblem:
    """An SQLite error met while opening `path`, as a SqliteFileProblem naming the file."""
    text = locked_for_too_long(err, busy_timeout) if is_busy(err) else str(err)
    if getattr(err, "sqlite_errorname", "").startswith(CORRUPT_ERRORS):
        return SqliteFileProblem("corrupted", f"{path}: {text}", text)
    return SqliteFileProblem("unavailable", f"{path}: {text}")


async def open_sqlite(
    path: str, *, busy_timeout: float, verify: bool, accept_lost_wal: bool = False
) -> aiosqlite.Connection:
    """A connection to a checked file: refused before anything is written when the file is not
    an intact database, or its `-wal` lost committed frames (unless `accept_lost_wal`);
    `verify` adds `PRAGMA quick_check` on a read-only connection first (which never
    checkpoints into the file). Then a busy timeout and WAL mode.

    Raises SqliteFileProblem; other sqlite3 errors are left to the caller to translate.
    """
    in_memory = path == ":memory:"
    if not in_memory:
        with _direct_reads(path) as safe:  # both checks under one look at the descriptors
            if safe:
                _check_sqlite_file(path)
            loss = _lost_wal_frames(path) if safe else None
        if loss is not None and (loss.foreign or not accept_lost_wal):
            problem = SqliteFileProblem(
                "corrupted", loss.detail, integrity_of(path, immutable=True)
            )
            problem.loss = loss
            raise problem
        if verify and os.path.exists(path):
            result = await asyncio.to_thread(integrity_of, path, busy_timeout=busy_timeout)
            if result != "ok":
                raise SqliteFileProblem("corrupted", f"quick_check: {result}", result)
    try:
        conn = await connect_sqlite(path)
    except sqlite3.Error as err:
        raise SqliteFileProblem("unavailable", str(err)) from None
    try:
        await set_busy_timeout(conn, busy_timeout)
        if not in_memory:
            await enable_wal(conn, busy_timeout)
    except sqlite3.DatabaseError as err:
        await conn.close()
        if getattr(err, "sqlite_errorname", "") in CORRUPT_ERRORS:
            raise SqliteFileProblem("corrupted", str(err), str(err)) from None
        raise
    except BaseException:
        await conn.close()
        raise
    return conn
