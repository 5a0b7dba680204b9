"""One live connection to an MCP server: the task that holds it, its session, and its tool
listing (bounded in time, pages and tools), and the errors a server that cannot be used
raises.

The SDK's transports are context managers that must be left by the task that entered them,
so the connection lives in a task of its own; calls from the runs' tasks use its session.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from loomgraph.errors import LoomgraphError
from loomgraph.tools.mcp.lost import OnLost, SessionLost

if TYPE_CHECKING:
    import anyio

_log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0
"""Closing a connection waits at most this long (or the server's `timeout`, when shorter)
for it to end by itself: an HTTP session's DELETE answered, a stdio server's exit. Then it is
cut: the HTTP request is dropped; a stdio server is stopped as the SDK stops one (it is
asked to, then SIGTERM, then SIGKILL: bounded by the SDK, and not cut short)."""


class _Server(Protocol):
    """What a connection needs of its `MCPServer`."""

    name: str
    timeout: float | None
    start_timeout: float | None
    max_pages: int
    max_tools: int

    def describe(self) -> str: ...

    def label(self) -> str: ...

    def redact(self, text: str) -> str: ...

    def open(self, on_lost: OnLost) -> contextlib.AbstractAsyncContextManager[Any]: ...

    def listed(self, link: Link) -> None: ...


class MCPServerError(LoomgraphError):
    """An MCP server could not be started or connected to (the message says which and why)."""

    def __init__(self, server: str, problem: str) -> None:
        super().__init__(f"MCP server {server!r}: {problem}")
        self.server = server
        self.problem = problem


class MCPListingTooLarge(MCPServerError):
    """A server's tool listing ran past `MCPServer.max_pages` pages, `max_tools` tools or
    `max_listing_chars` characters."""


class Link:
    """One live connection: the task that holds it, its session, and its tool listing."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.session: Any = None
        self.tools: list[Any] = []  # the mcp Tools of the last listing, as listed
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.stop = asyncio.Event()
        self.refreshing: asyncio.Task[None] | None = None
        self.stale = False  # a change was announced since the listing under way started
        self.lost: list[SessionLost] = []  # the server's 404s to this session's requests
        self.calls = 0  # calls under way on it
        self.retired = False  # no new call uses it; it ends when its last call does
        self._scope: anyio.CancelScope | None = None  # around the connection: close cuts it
        self.task = asyncio.create_task(self._hold(), name=f"mcp:{server.name}")

    @property
    def alive(self) -> bool:
        """Whether the connection holds (and the server still knows its session), is not
        retired, and is of the running event loop."""
        return (
            not self.task.done()
            and not self.lost
            and not self.retired
            and self.loop is asyncio.get_running_loop()
        )

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self.task.done()

    @contextlib.asynccontextmanager
    async def in_use(self) -> AsyncIterator[None]:
        """A call under way on this connection: a retired one ends when its last call does."""
        self.calls += 1
        try:
            yield
        finally:
            self.calls -= 1
            if self.retired and self.calls == 0:
                await self.close()

    async def retire(self) -> None:
        """Take no new call; end now, or when the calls under way end (never cut one: the
        server may be running it, and its answer may still come on this connection)."""
        self.retired = True
        if self.calls == 0 or self.loop is not asyncio.get_running_loop():
            await self.close()

    def _session_lost(self, lost: SessionLost) -> None:
        # Not ended here: the call the 404 answered is still reading its answer, and others
        # may be under way. The link no longer counts as alive, so the next call (or start)
        # connects again and retires this one.
        if not self.lost:
            _log.warning(
                "MCP server %r no longer knows the session (HTTP 404: it restarted or ended "
                "it); it is connected to again",
                self.server.name,
            )
        self.lost.append(lost)

    async def _hold(self) -> None:
        import anyio

        server = self.server
        try:
            # Cut by an anyio scope, not task.cancel(): the SDK shields its stdio shutdown
            # (so that the server process is stopped) from anyio cancellation only.
            with anyio.CancelScope() as self._scope:
                async with contextlib.AsyncExitStack() as stack:
                    opened = server.open(self._session_lost)
                    read, write = await stack.enter_async_context(opened)
                    session = await stack.enter_async_context(
                        session_type()(read, write, message_handler=self._on_message)
                    )
                    with deadline(server.start_timeout):
                        await session.initialize()
                        self.session = session
                        await self.refresh()
                    self.ready.set_result(None)
                    await self.stop.wait()
            if not self.ready.done():  # close() cut a start under way
                raise MCPServerError(server.name, "it was closed before it started")
        except BaseException as exc:
            if not self.ready.done():
                typed = find_error(exc, MCPServerError)  # a listing over the caps says so itself
                # Named by the program or host only, here as in the logs: the command line or
                # the URL may carry a key.
                why = server.redact(say(exc))
                if find_error(exc, TimeoutError) is not None and server.start_timeout is not None:
                    why = (
                        f"it did not start and list its tools within {server.start_timeout:g} "
                        "seconds (start_timeout)"
                    )
                self.ready.set_exception(
                    typed or MCPServerError(server.name, f"cannot start {server.label()}: {why}")
                )
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self.session = None

    async def refresh(self) -> None:
        """List the server's tools again (all pages, within the caps: MCPListingTooLarge)."""
        server = self.server
        tools: list[Any] = []
        cursor: str | None = None
        for _ in range(server.max_pages):
            if cursor is None:
                page = await self.session.list_tools()
            else:
                from mcp.types import PaginatedRequestParams

                page = await self.session.list_tools(params=PaginatedRequestParams(cursor=cursor))
            tools.extend(page.tools)
            if len(tools) > server.max_tools:
                problem = f"it lists more than {server.max_tools} tools (MCPServer.max_tools)"
                raise MCPListingTooLarge(server.name, problem)
            cursor = page.next_cursor
            if not cursor:
                break
        else:  # a cursor after the last page allowed: a server paging without end
            problem = f"its tool listing runs to more than {server.max_pages} pages"
            raise MCPListingTooLarge(server.name, f"{problem} (MCPServer.max_pages)")
        self.tools = tools
        server.listed(self)

    async def _on_message(self, message: Any) -> None:
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            # Not awaited here: this runs on the session's receive loop, which must go on to
            # receive the listing's answer.
            self.stale = True
            if self.refreshing is None or self.refreshing.done():
                self.refreshing = self.loop.create_task(self._refresh_while_stale())
        elif isinstance(message, Exception):
            _log.warning("MCP server %r sent something unreadable: %s", self.server.name, message)

    async def _refresh_while_stale(self) -> None:
        # One listing at a time, run again when a change was announced during it: a server
        # announcing changes without end cannot pile up listings, and an older listing never
        # lands after a newer one. Each listing is bounded by start_timeout; one that fails
        # leaves the tools listed before in place (the next call or start finds out for real).
        name, limit = self.server.name, self.server.start_timeout
        while self.stale:
            self.stale = False
            try:
                with deadline(limit):
                    await self.refresh()
            except TimeoutError:
                _log.warning(
                    "MCP server %r: listing its tools took longer than %g seconds "
                    "(start_timeout); the tools listed before are kept",
                    name,
                    limit,
                )
            except MCPServerError as exc:
                _log.warning("%s; the tools listed before are kept", exc)
            except Exception as exc:
                problem = self.server.redact(say(exc))
                _log.warning("MCP server %r: listing its tools failed: %s", name, problem)

    async def close(self) -> None:
        """End the connection (and a listing or a start under way), waiting for it to end by
        itself at most `CLOSE_TIMEOUT` seconds (or the server's `timeout`), then cutting it."""
        self.stop.set()
        if self.loop is not asyncio.get_running_loop():
            return
        refreshing = self.refreshing
        if refreshing is not None and not refreshing.done():
            refreshing.cancel()  # its answer is of no use once the connection ends
            with contextlib.suppress(BaseException):
                await refreshing
        limit = self.server.timeout
        bound = CLOSE_TIMEOUT if limit is None else min(limit, CLOSE_TIMEOUT)
        done, _ = await asyncio.wait({self.task}, timeout=bound)
        if not done:
            # A server that does not answer the end of its session (or its start) would hold
            # the agent's close for as long as it likes (the SDK's DELETE waits up to 300 s).
            _log.info(
                "MCP server %r did not end its connection within %g seconds; it is cut",
                self.server.name,
                bound,
            )
            if self._scope is not None:
                self._scope.cancel()
            else:  # not started yet: nothing is open
                self.task.cancel()
                if not self.ready.done():
                    problem = "it was closed before it started"
                    self.ready.set_exception(MCPServerError(self.server.name, problem))
        with contextlib.suppress(BaseException):
            await self.task


@functools.cache
def session_type() -> type[Any]:
    """The SDK's `ClientSession`, but leaving the check of tool results to loomgraph."""
    from mcp.client.session import ClientSession

    # ClientSession.call_tool checks structuredContent against the outputSchema with
    # jsonschema, so its patterns on Python's `re`, synchronously on the event loop: one
    # pattern may hold the loop for minutes. check_output checks it on RE2 instead.
    # `validate_tool_result` is the SDK's method for it, and call_tool its only caller. A
    # later SDK without it would check with `re` again: refuse to connect rather than that.
    if not callable(getattr(ClientSession, "validate_tool_result", None)):
        raise RuntimeError(
            "this mcp SDK has no ClientSession.validate_tool_result: loomgraph cannot keep "
            "it from checking outputSchema patterns with Python's `re`"
        )

    class Session(ClientSession):
        """A session whose results check_output checks (on RE2), not the SDK."""

        async def validate_tool_result(self, name: str, result: Any) -> None:
            """Nothing: check_output checks the result."""

    return Session


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """A block that raises TimeoutError after `seconds` (None: no limit)."""
    import anyio

    with anyio.fail_after(seconds):
        yield


E = TypeVar("E", bound=BaseException)


def find_error(exc: BaseException, kind: type[E]) -> E | None:
    """`exc`, or the first exception of its kind inside an exception group."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := find_error(inner, kind)) is not None:
                return found
    return None


def say(exc: BaseException) -> str:
    """An exception (or every one of a group) as `Type: message`, for messages."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(say(e) for e in exc.exceptions)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
