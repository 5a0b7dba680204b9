"""`MCPServer`: one MCP server (a stdio subprocess or a streamable HTTP endpoint) whose tools
an Agent offers.

The `mcp` SDK is imported only when a server is first used. The connection lives in a task
of its own (the SDK's transports are context managers that must be left by the task that
entered them); calls from the runs' tasks go through its session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from loomgraph.errors import LoomgraphError
from loomgraph.protocols import ToolResult, ToolSpec, tool_run
from loomgraph.tools.mcp.convert import (
    IDEMPOTENCY_META,
    Trust,
    server_error,
    to_result,
    to_spec,
)
from loomgraph.tools.mcp.transports import Http, Stdio
from loomgraph.tools.results import error as error_result
from loomgraph.tools.tool import check_timeout

_log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# JSON-RPC codes the SDK raises with (mcp_types.jsonrpc), kept here to avoid importing it.
_CONNECTION_CLOSED = -32000
_REQUEST_TIMEOUT = -32001


class MCPServerError(LoomgraphError):
    """An MCP server could not be started or connected to (the message says which and why)."""

    def __init__(self, server: str, problem: str) -> None:
        super().__init__(f"MCP server {server!r}: {problem}")
        self.server = server
        self.problem = problem


class _Link:
    """One live connection: the task that holds it, its session, and its tool listing."""

    def __init__(self, server: MCPServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.session: Any = None
        self.tools: dict[str, Any] = {}  # original name -> mcp Tool
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.stop = asyncio.Event()
        self.refreshing: asyncio.Task[None] | None = None
        self.task = asyncio.create_task(self._hold(), name=f"mcp:{server.name}")

    @property
    def alive(self) -> bool:
        return not self.task.done() and self.loop is asyncio.get_running_loop()

    async def _hold(self) -> None:
        from mcp.client.session import ClientSession

        server = self.server
        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(server._transport.open())
                session = await stack.enter_async_context(
                    ClientSession(read, write, message_handler=self._on_message)
                )
                with _deadline(server.start_timeout):
                    await session.initialize()
                    self.session = session
                    await self.refresh()
                self.ready.set_result(None)
                await self.stop.wait()
        except BaseException as exc:
            if not self.ready.done():
                self.ready.set_exception(
                    MCPServerError(server.name, f"cannot start {server.describe()}: {_say(exc)}")
                )
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self.session = None

    async def refresh(self) -> None:
        """List the server's tools again (all pages)."""
        tools: dict[str, Any] = {}
        cursor: str | None = None
        while True:
            if cursor is None:
                page = await self.session.list_tools()
            else:
                from mcp.types import PaginatedRequestParams

                page = await self.session.list_tools(params=PaginatedRequestParams(cursor=cursor))
            tools.update((t.name, t) for t in page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        self.tools = tools
        self.server._listed()

    async def _on_message(self, message: Any) -> None:
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            # Not awaited here: this runs on the session's receive loop, which must go on to
            # receive the listing's answer.
            self.refreshing = self.loop.create_task(self._refresh_quietly())
        elif isinstance(message, Exception):
            _log.warning("MCP server %r sent something unreadable: %s", self.server.name, message)

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:  # the next call or start finds out for real
            _log.warning("MCP server %r: listing its tools failed: %s", self.server.name, exc)

    async def close(self) -> None:
        self.stop.set()
        if self.loop is asyncio.get_running_loop():
            with contextlib.suppress(BaseException):
                await self.task


@contextlib.contextmanager
def _deadline(seconds: float | None) -> Any:
    import anyio

    with anyio.fail_after(seconds):
        yield


def _say(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_say(e) for e in exc.exceptions)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class MCPServer:
    """An MCP server whose tools an Agent offers: give it in `Agent(tools=[...])`.

    Build one with `MCPServer.stdio(...)` or `MCPServer.http(...)`. It starts (or connects)
    when a run first needs it, is shared by all runs of the Agent, and stops with
    `agent.aclose()`. A server that died is started again by the next call.
    """

    def __init__(
        self,
        transport: Stdio | Http,
        *,
        name: str,
        prefix: str | None = None,
        trust: bool = False,
        timeout: float | None = 60.0,
        start_timeout: float | None = 60.0,
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"invalid MCP server name {name!r}: use 1-64 letters, digits, _ or -")
        if prefix is not None and not (isinstance(prefix, str) and _NAME.match(prefix)):
            raise ValueError(f"invalid tool prefix {prefix!r}: use letters, digits, _ or -")
        if not isinstance(trust, bool):
            raise TypeError(f"MCP server {name!r}: trust must be a bool")
        self._transport = transport
        self.name = name
        self.prefix = prefix
        self.trust = Trust(trust)
        self.timeout = check_timeout(name, timeout)
        self.start_timeout = check_timeout(name, start_timeout)
        self._link: _Link | None = None
        self._lock: asyncio.Lock | None = None
        self._specs: dict[str, ToolSpec] = {}  # exposed name -> spec
        self._original: dict[str, str] = {}  # exposed name -> the server's name
        self._listeners: list[Callable[[], None]] = []
        self.listings = 0  # how many times the tools were listed (tests wait on it)

    @classmethod
    def stdio(
        cls,
        command: str,
        *args: str,
        name: str,
        prefix: str | None = None,
        trust: bool = False,
        timeout: float | None = 60.0,
        start_timeout: float | None = 60.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> MCPServer:
        """A server run as a subprocess speaking MCP over its stdin and stdout.

        `timeout` bounds each call (seconds; None for none), `start_timeout` the start and
        the first listing; `env` is added to a minimal environment (PATH, HOME, ...).
        """
        return cls(
            Stdio(command, tuple(args), env, cwd),
            name=name,
            prefix=prefix,
            trust=trust,
            timeout=timeout,
            start_timeout=start_timeout,
        )

    @classmethod
    def http(
        cls,
        url: str,
        *,
        name: str,
        headers: Mapping[str, str] | None = None,
        prefix: str | None = None,
        trust: bool = False,
        timeout: float | None = 60.0,
        start_timeout: float | None = 60.0,
    ) -> MCPServer:
        """A server reached over streamable HTTP, sending `headers` (say, Authorization)."""
        return cls(
            Http(url, dict(headers or {})),
            name=name,
            prefix=prefix,
            trust=trust,
            timeout=timeout,
            start_timeout=start_timeout,
        )

    def describe(self) -> str:
        """The command line or URL, for messages."""
        return self._transport.describe()

    def __repr__(self) -> str:
        return f"<MCPServer {self.name} {self.describe()}>"

    # ----------------------------------------------------------------- lifecycle

    @property
    def started(self) -> bool:
        """Whether a live connection exists in the running event loop."""
        return self._link is not None and self._link.alive

    async def start(self) -> None:
        """Start or connect (again) unless already connected; raises MCPServerError."""
        if self.started:
            return
        lock = self._loop_lock()
        async with lock:
            if self.started:
                return
            if self._link is not None:
                await self._drop()
            link = _Link(self)
            self._link = link
            try:
                await link.ready
            except BaseException:
                self._link = None
                await link.close()
                raise

    def _loop_lock(self) -> asyncio.Lock:
        # A lock belongs to one event loop; a later asyncio.run gets a new one.
        link = self._link
        if self._lock is None or (link is not None and link.loop is not asyncio.get_running_loop()):
            self._lock = asyncio.Lock()
        return self._lock

    async def _drop(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close()

    async def close(self) -> None:
        """Stop the server (stdio) or end the session (HTTP)."""
        await self._drop()

    def on_listed(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every new listing of the server's tools."""
        self._listeners.append(listener)

    def _listed(self) -> None:
        link = self._link
        tools = link.tools if link is not None else {}
        specs: dict[str, ToolSpec] = {}
        original: dict[str, str] = {}
        for tool_name, item in tools.items():
            exposed = f"{self.prefix}_{tool_name}" if self.prefix else tool_name
            specs[exposed] = to_spec(item, exposed, self.trust)
            original[exposed] = tool_name
        self._specs, self._original = specs, original
        self.listings += 1
        for listener in self._listeners:
            listener()

    # ----------------------------------------------------------------- tools

    def specs(self) -> list[ToolSpec]:
        """The specs of the tools of the last listing, under their exposed names."""
        return list(self._specs.values())

    def spec(self, name: str) -> ToolSpec | None:
        """One tool's spec, or None."""
        return self._specs.get(name)

    def names(self) -> Sequence[str]:
        """The exposed tool names of the last listing."""
        return list(self._specs)

    async def call(self, name: str, args: dict[str, Any], idempotency_key: str) -> ToolResult:
        """Call one tool; every failure (of the tool or of the server) is an error result."""
        original = self._original.get(name, name)
        try:
            await self.start()
        except MCPServerError as exc:
            return server_error(self.name, name, exc.problem)
        link = self._link
        session = link.session if link is not None else None
        if session is None:
            return server_error(self.name, name, "the connection closed")
        run = tool_run.get()

        async def progress(done: float, total: float | None, message: str | None) -> None:
            if run is not None:  # progress becomes a `tool_progress` event of the run
                await run.progress(message or "", {"progress": done, "total": total})

        try:
            result = await session.call_tool(
                original,
                args,
                read_timeout_seconds=self.timeout,
                progress_callback=progress,
                meta={IDEMPOTENCY_META: idempotency_key},
            )
        except asyncio.CancelledError:
            raise  # the SDK has sent `notifications/cancelled` on the way out
        except Exception as exc:
            return await self._failed(name, exc)
        refreshing = link.refreshing if link is not None else None
        if refreshing is not None and not refreshing.done():
            # A change announced during the call (before its answer) is in the next turn.
            await asyncio.shield(refreshing)
        return to_result(result)

    async def _failed(self, name: str, exc: Exception) -> ToolResult:
        code = getattr(exc, "code", None) if type(exc).__name__ == "MCPError" else None
        if code == _REQUEST_TIMEOUT:
            return error_result(
                "timeout", f"Tool {name!r} timed out after {self.timeout:g} seconds."
            )
        if isinstance(exc, RuntimeError) and "structured content" in str(exc):
            # The SDK checks structuredContent against the tool's outputSchema.
            return error_result("tool_exception", f"Tool {name!r} returned bad output: {exc}")
        if code is not None and code != _CONNECTION_CLOSED:
            # A JSON-RPC error answer (unknown tool, invalid params): the server lives on.
            return error_result("tool_exception", f"Tool {name!r} failed: {exc}")
        # The connection broke: forget it, so the next call starts the server again.
        _log.warning("MCP server %r failed during %r: %s", self.name, name, exc)
        await self._drop()
        return server_error(self.name, name, f"{_say(exc)}; it is restarted on the next call")
