"""asyncpg pools as every Postgres backend (journal, memory, ledger) opens and uses them: one
pool per event loop, created with its tables in one transaction, connections handed out with
the backend's errors translated. Backends must not import one another, so this is shared here."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from loomgraph._storage.cursor import PgCursor
from loomgraph._storage.loop_lock import LoopLock
from loomgraph._storage.seconds import checked_seconds
from loomgraph._storage.translate import Translate, keep, translated


def import_asyncpg(who: str) -> Any:
    """The asyncpg module, or an ImportError that says how to install it."""
    try:
        import asyncpg  # type: ignore[import-untyped,unused-ignore]
    except ImportError as err:
        raise ImportError(f"{who} needs asyncpg: pip install 'loomgraph[postgres]'") from err
    return asyncpg


# NAMEDATALEN - 1: the server truncates a longer identifier silently, so two long names
# that agree on their first 63 bytes would be one schema or table.
MAX_IDENT_BYTES = 63


def quote_ident(name: str) -> str:
    """An SQL identifier, quoted; ValueError naming it for one the server would not keep as
    given: empty, longer than 63 bytes (UTF-8), or holding NUL or a lone surrogate."""
    if not isinstance(name, str):
        raise TypeError(f"an SQL identifier must be a str, not {type(name).__name__}")
    if not name or "\x00" in name:
        raise ValueError(f"SQL identifier {name!r} is empty or contains a NUL character")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"SQL identifier {name!r} is not valid text (a lone surrogate)") from None
    if size > MAX_IDENT_BYTES:
        raise ValueError(
            f"SQL identifier {name!r} is {size} bytes, longer than {MAX_IDENT_BYTES} bytes: "
            "Postgres would cut it short, so it could name another's schema or table"
        )
    return '"' + name.replace('"', '""') + '"'


def scrub(dsn: str, text: str) -> str:
    """`text` with the DSN's password masked."""
    with contextlib.suppress(ValueError):
        password = urlsplit(dsn).password
        if password:
            text = text.replace(password, "***")
    return text


async def open_pool(
    pg: Any,
    dsn: str,
    *,
    pool_size: int,
    setup: Callable[[Any], Awaitable[None]],
    timeout: float | None = None,
    command_timeout: float | None = None,
    lock: str | None = None,
    unavailable: Callable[[str], Exception] | None = None,
    translate: Translate = keep,
) -> Any:
    """A pool whose first connection ran `setup` (create or check the tables) in one
    transaction, under the advisory lock named `lock` when given (workers starting together
    must not race on creating tables); the pool is terminated when `setup` fails.

    `timeout` bounds making a connection; `command_timeout` bounds every statement (the
    driver gives up with TimeoutError), and the server ends a transaction left idle for
    twice as long (a client whose connection hangs mid-transaction must not keep its
    locks). A pool that cannot be made raises `unavailable(detail)` (the password
    scrubbed), when given; an error of `setup` is raised as `translate(err)`.
    """
    options: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    if command_timeout is not None:
        options["command_timeout"] = command_timeout
        idle_ms = max(int(command_timeout * 2000), 1000)
        options["server_settings"] = {"idle_in_transaction_session_timeout": str(idle_ms)}
    try:
        pool = await pg.create_pool(dsn, min_size=1, max_size=pool_size, **options)
    except (OSError, TimeoutError, ValueError, pg.PostgresError, pg.InterfaceError) as err:
        if unavailable is None:
            raise
        raise unavailable(failure(dsn, err)) from None
    try:
        with translated(translate, hide_cause=True):
            async with pool.acquire() as con, con.transaction():
                if lock is not None:
                    await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", lock)
                await setup(con)
    except BaseException:
        pool.terminate()
        raise
    return pool


def connection_failed(pg: Any, err: Exception) -> bool:
    """Whether `err` says the database cannot be reached (rather than a statement failed)."""
    return isinstance(
        err,
        OSError
        | TimeoutError
        | pg.InterfaceError
        | pg.PostgresConnectionError
        | pg.CannotConnectNowError
        | pg.TooManyConnectionsError,
    )


def failure(dsn: str, err: Exception) -> str:
    """An error as a message names it: its type and text, the password masked."""
    text = str(err) or ("no answer in time" if isinstance(err, TimeoutError) else "")
    return scrub(dsn, f"{type(err).__name__}: {text}")


# The server ends a transaction idle for twice `command_timeout` (`open_pool`); its setting
# is an int of milliseconds, so a longer command_timeout could not be set at all.
MAX_COMMAND_TIMEOUT = (2**31 - 1) / 2000


def checked_timeouts(
    connect_timeout: Any, command_timeout: Any, *, error: type[ValueError] = ValueError
) -> None:
    """`error` (a ValueError) naming the limit unless both of a Postgres backend's time limits
    are finite numbers of seconds > 0 (`checked_seconds`)."""
    checked_seconds("connect_timeout", connect_timeout, error=error)
    checked_seconds("command_timeout", command_timeout, error=error, most=MAX_COMMAND_TIMEOUT)


def unreachable(
    pg: Any, err: Exception, dsn: str, connect_timeout: float, command_timeout: float
) -> str | None:
    """Why `err` says the server cannot be reached now (a timeout names both limits; the
    password masked), or None when it is a statement's own failure."""
    if isinstance(err, TimeoutError):
        return (
            f"TimeoutError: no answer in time (connect_timeout {connect_timeout} s, "
            f"command_timeout {command_timeout} s)"
        )
    return failure(dsn, err) if connection_failed(pg, err) else None


def out_of_service(
    pg: Any, err: Exception, dsn: str, connect_timeout: float, command_timeout: float
) -> str | None:
    """Why `err` says the server cannot do the work now: it cannot be reached (`unreachable`),
    or it ended or refused the work for a reason of its own (shutting down, out of
    resources, a lock or idle timeout, a database or role that does not exist); None when it
    is a statement's own failure."""
    why = unreachable(pg, err, dsn, connect_timeout, command_timeout)
    if why is None and isinstance(
        err,
        pg.OperatorInterventionError  # shutdown, crash, cancelled, cannot connect now
        | pg.InsufficientResourcesError  # too many connections, disk full, out of memory
        | pg.IdleInTransactionSessionTimeoutError
        | pg.LockNotAvailableError
        | pg.InvalidCatalogNameError
        | pg.InvalidAuthorizationSpecificationError,
    ):
        why = failure(dsn, err)
    return why


class LoopPool:
    """Opens the pool on first use in each event loop (once, however many tasks ask).

    A pool's connections belong to the loop that made them, so a later `asyncio.run()` gets
    a pool of its own.
    """

    def __init__(
        self, open_pool: Callable[[], Awaitable[Any]], timeout: float | None = None
    ) -> None:
        self._open = open_pool
        self._pool: Any = None
        self._lock = LoopLock()
        # Bounds taking a connection from the pool, giving it back, and closing the pool
        # (an unreachable server must not make any of them wait forever); None: unbounded.
        self.timeout = timeout

    async def get(self) -> Any:
        """The running loop's pool."""
        lock, new = self._lock.current()
        if new:
            if self._pool is not None:
                with contextlib.suppress(Exception):
                    self._pool.terminate()  # the old loop's pool cannot be closed from here
            self._pool = None
        if self._pool is None:
            async with lock:
                if self._pool is None:
                    self._pool = await self._open()
        return self._pool

    async def close(self) -> None:
        """Close the pool; the next use opens a new one."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if self.timeout is None:
            await pool.close()
            return
        try:
            # A graceful close waits for the server's goodbye, which a hung one never sends.
            async with asyncio.timeout(self.timeout):
                await pool.close()
        except (TimeoutError, OSError):
            pool.terminate()

    @contextlib.asynccontextmanager
    async def cursor(
        self,
        *,
        transaction: bool = True,
        readonly: bool = False,
        isolation: str | None = None,
        translate: Translate = keep,
        hide_cause: bool = True,
        pg: Any = None,
        constraints: bool = False,
        before: Callable[[Any], Awaitable[None]] | None = None,
    ) -> AsyncIterator[PgCursor]:
        """A cursor on a pooled connection, inside a transaction unless `transaction=False`
        (each statement its own); `before` runs first on the connection; errors translated.

        Work cut off on the connection (cancelled, timed out, the connection lost) drops the
        connection: the server rolls back what it began, and nobody waits for a ROLLBACK or
        a cancel request that a stalled network would answer only at `command_timeout`. An
        error with the connection sound (the server refused a statement, the caller's own
        code raised) rolls back as usual."""
        pool = await self.get()
        with translated(translate, hide_cause=hide_cause):
            async with pool.acquire(timeout=self.timeout) as con:
                tx = None
                if transaction:
                    tx = con.transaction(readonly=readonly, isolation=isolation)
                try:
                    if tx is not None:
                        await tx.start()
                    if before is not None:
                        await before(con)
                    yield PgCursor(con, pg, constraints=constraints)
                except BaseException as err:
                    await _end_after(con, tx, err)
                    raise
                if tx is not None:
                    try:
                        await tx.commit()
                    except BaseException as err:
                        if _cut_off(err):
                            con.terminate()  # the commit's outcome is unknown either way
                        raise


def _cut_off(err: BaseException) -> bool:
    """Whether `err` leaves the connection in an unknown state: a cancellation or another
    BaseException, a timeout, a lost connection (the driver's interface errors, OSError)."""
    if not isinstance(err, Exception) or isinstance(err, TimeoutError | OSError):
        return True
    import asyncpg  # loaded already: the connection is one of its

    return isinstance(err, asyncpg.InterfaceError)


async def _end_after(con: Any, tx: Any, err: BaseException) -> None:
    """End the connection's work after `err`: drop the connection when the work was cut off,
    else roll its transaction back (and drop it if even that fails)."""
    if _cut_off(err):
        con.terminate()
        return
    if tx is None:
        return
    try:
        await tx.rollback()
    except BaseException as failed:
        con.terminate()
        if not isinstance(failed, Exception):
            raise  # cancelled meanwhile: that goes on; else `err` is what the caller raises
