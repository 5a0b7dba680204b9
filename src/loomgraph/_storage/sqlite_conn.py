"""One SQLite connection per backend object, opened on first use and used by one task at a
time: the session and transaction code of the SQLite journal, memory and budget ledger."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import aiosqlite

from loomgraph._storage.cursor import Cursor, SqliteCursor, sqlite_constraint
from loomgraph._storage.loop_lock import LoopLock
from loomgraph._storage.sqlite_files import SqliteFileProblem
from loomgraph._storage.sqlite_inline import InlineCursor, InlineWriter
from loomgraph._storage.sqlite_setup import Synchronous
from loomgraph._storage.translate import Translate, keep, translated


class SqliteConnection:
    """A lazily opened connection; every use holds the running loop's lock.

    `open` makes the connection (checked, set up); `translate` turns the errors of a session
    into the backend's own. With `per_loop`, a connection is not carried into another event
    loop: the old one is closed first.

    With `watch` (the file's path), every write first checks that the file at the path is
    still the one opened (its device and inode, one `stat`): a file deleted or replaced
    meanwhile would take every later commit into the unlinked file, lost without an error.
    Then the write raises `SqliteFileProblem("unavailable")` (translated), nothing written,
    and the connections are let go: the next use opens the file now at the path. The `-wal`
    and `-shm` files this connection used are removed from the path if they are still there
    (the same files, by device and inode): a WAL names no database, so SQLite would replay
    the old file's WAL onto a backup restored in its place, undoing the restore.
    """

    def __init__(
        self,
        open: Callable[[], Awaitable[aiosqlite.Connection]],
        *,
        translate: Translate = keep,
        per_loop: bool = False,
        watch: str | None = None,
    ) -> None:
        self._open = open
        self._translate = translate
        self._per_loop = per_loop
        self._conn: aiosqlite.Connection | None = None
        self._lock = LoopLock()
        self._watch = None if watch == ":memory:" else watch
        self._identity: tuple[int, int] | None = None  # the opened file's (device, inode)
        self._sidecars: dict[str, tuple[int, int] | None] = {}  # its -wal and -shm files'

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        lock, new = self._lock.current()
        if new and self._per_loop:
            with contextlib.suppress(Exception):  # the old loop's connection, if any
                await self._drop()
        async with lock:
            yield

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def _connection(self) -> aiosqlite.Connection:
        """The open connection, opened now (and the file it opened noted) if need be."""
        if self._conn is None:
            self._conn = await self._open()  # checks the file before any write
            if self._watch is not None:
                self._identity = _identity(self._watch)
                self._sidecars = {s: _identity(self._watch + s) for s in _SIDECARS}
        return self._conn

    async def _check_file(self, inline: InlineWriter | None) -> None:
        """Before a write: refuse it when the file at the watched path is no longer the one
        the connection opened (deleted, or replaced), and let go of both connections."""
        if self._watch is None or self._identity is None:
            return
        now = _identity(self._watch)
        if now == self._identity:
            if None in self._sidecars.values():  # made after the opening: noted once
                self._sidecars = {s: _identity(self._watch + s) for s in _SIDECARS}
            return
        self._identity = None
        if inline is not None:
            inline.close()
        with contextlib.suppress(Exception):
            await self._drop()
        for suffix, ours in self._sidecars.items():
            path = self._watch + suffix
            if ours is not None and _identity(path) == ours:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)  # the old file's, not the restored one's
        what = "deleted" if now is None else "replaced by another file"
        raise SqliteFileProblem(
            "unavailable",
            f"{self._watch} is no longer the file that was opened (it was {what}); nothing "
            "was written, and the next use opens the file now at that path",
        )

    async def close(self) -> None:
        """Close the connection; the next use opens it again."""
        if self._conn is None:
            return
        async with self._locked():
            await self._drop()

    @contextlib.asynccontextmanager
    async def session(
        self, *, writing: bool = False, inline: InlineWriter | None = None
    ) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, opened if need be, for this task alone (errors translated);
        `writing`: the file is checked first (see `watch`)."""
        async with self._locked():
            with translated(self._translate):
                conn = await self._connection()
                if writing:
                    await self._check_file(inline)
                yield conn

    async def execute(
        self, sql: str, args: Sequence[Any], *, inline: InlineWriter | None = None
    ) -> int:
        """Run one statement on its own (its own transaction); the rows it changed.

        The same as a `session()` running one statement through a constraints `SqliteCursor`,
        without the three context managers: this is the journal's per-write path. With
        `inline`, the statement is first tried on that synchronous connection, and sent to
        the worker thread only when it would have to wait for another writer's lock."""
        lock, new = self._lock.current()
        if new and self._per_loop:
            async with self.session(writing=True, inline=inline) as conn:
                return await SqliteCursor(conn, constraints=True).execute(sql, args)
        async with lock:
            try:
                conn = await self._connection()
                await self._check_file(inline)
                try:
                    if inline is not None:
                        await _checkpoint_if_due(conn, inline)
                        changed = inline.execute(sql, args)
                        if changed is not None:
                            return changed
                    cursor = await conn.execute(sql, args)
                except sqlite3.IntegrityError as err:
                    constraint = sqlite_constraint(err)
                    if constraint is None:
                        raise
                    raise constraint from None
                return cursor.rowcount
            except Exception as err:  # as `translated()` does for a session
                typed = self._translate(err)
                if typed is err:
                    raise
                raise typed from err

    @contextlib.asynccontextmanager
    async def transaction(
        self, begin: str = "BEGIN IMMEDIATE"
    ) -> AsyncIterator[aiosqlite.Connection]:
        """A session inside one transaction: committed on exit, rolled back on error.

        IMMEDIATE takes the write lock up front, where busy_timeout applies; a deferred
        transaction upgrading from read to write could fail with "database is locked".
        """
        async with self.session(writing=True) as conn, _begun(conn, begin):
            yield conn

    @contextlib.asynccontextmanager
    async def write(
        self,
        *,
        inline: InlineWriter | None = None,
        constraints: bool = False,
        synchronous: Synchronous | None = None,
    ) -> AsyncIterator[Cursor]:
        """A write transaction as a `Cursor`: on `inline`'s connection when it takes the
        write lock at once (its statements then run without leaving the event loop's thread;
        see `InlineWriter.commit` for its commit), else on the worker thread, waiting for the
        lock as `transaction()` does. `synchronous` sets SQLite's level for this transaction's
        commit (before it begins: SQLite allows no change inside one)."""
        async with self.session(writing=True, inline=inline) as conn:
            sync = None
            if inline is not None:
                await _checkpoint_if_due(conn, inline)
                sync = inline.begin(synchronous)
            if inline is None or sync is None:
                if synchronous is not None:
                    await conn.execute(f"PRAGMA synchronous = {synchronous}")
                async with _begun(conn, "BEGIN IMMEDIATE"):
                    yield SqliteCursor(conn, constraints=constraints)
                return
            try:
                yield InlineCursor(sync, constraints=constraints)
            except BaseException:
                sync.execute("ROLLBACK")
                raise
            await inline.commit(sync)


_SIDECARS = ("-wal", "-shm")


def _identity(path: str) -> tuple[int, int] | None:
    """The (device, inode) of the file at `path`, or None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


async def _checkpoint_if_due(conn: aiosqlite.Connection, inline: InlineWriter) -> None:
    """Checkpoint the log on the worker thread once enough writes went through `inline`.

    Before the write, so a failed or cancelled checkpoint leaves nothing half done; a busy
    one simply does less."""
    if inline.checkpoint_due():
        with contextlib.suppress(sqlite3.Error):
            await conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


@contextlib.asynccontextmanager
async def _begun(conn: aiosqlite.Connection, begin: str) -> AsyncIterator[None]:
    """One transaction on `conn`: committed on exit, rolled back on error."""
    try:
        # Inside the try: a transaction cancelled while BEGIN waits for another process's
        # write lock must still end the transaction it will have begun.
        await conn.execute(begin)
        yield
    except BaseException:
        # Unconditional: after a cancellation the BEGIN may still be queued on the worker
        # thread; a ROLLBACK queued behind it ends it either way.
        with contextlib.suppress(sqlite3.Error):
            await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")
