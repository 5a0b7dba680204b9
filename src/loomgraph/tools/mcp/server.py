"""`MCPServer`: one MCP server (a stdio subprocess or a streamable HTTP endpoint) whose tools
an Agent offers.

The `mcp` SDK is imported only when a server is first used. The connection lives in a task
of its own (connection.py); calls from the runs' tasks go through its session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from loomgraph.protocols import INVALID_ARGUMENTS, ToolResult, ToolSpec, tool_run
from loomgraph.protocols.messages import ToolOrigin
from loomgraph.tools.mcp.checks import NAME, check_arguments, check_output
from loomgraph.tools.mcp.connection import Link, MCPListingTooLarge, MCPServerError, say
from loomgraph.tools.mcp.convert import IDEMPOTENCY_META, Trust, server_error, to_result
from loomgraph.tools.mcp.convert import origin as tool_origin
from loomgraph.tools.mcp.listing import Offer, offer
from loomgraph.tools.mcp.lost import OnLost
from loomgraph.tools.mcp.resend import Refused, refused
from loomgraph.tools.mcp.transports import Http, Stdio
from loomgraph.tools.results import error as error_result
from loomgraph.tools.results import timed_out
from loomgraph.tools.schema_defs import MAX_TOOL_CHARS
from loomgraph.tools.tool import check_timeout

__all__ = ["MCPListingTooLarge", "MCPServer", "MCPServerError"]

_log = logging.getLogger(__name__)

# JSON-RPC codes the SDK raises with (mcp_types.jsonrpc), kept here to avoid importing it.
_CONNECTION_CLOSED = -32000
_REQUEST_TIMEOUT = -32001
_INVALID_PARAMS = -32602


class MCPServer:
    """An MCP server whose tools an Agent offers: give it in `Agent(tools=[...])`.

    Build one with `MCPServer.stdio(...)` or `MCPServer.http(...)`. It starts (or connects)
    when a run first needs it, is shared by all runs of the Agent, and stops with
    `agent.aclose()`. A server that died is started again by the next call.
    """

    max_pages = 100
    """A listing of more pages is refused (MCPListingTooLarge): at start, the start fails;
    later, the tools listed before are kept."""
    max_tools = 1000
    """The same for a listing of more tools."""
    max_tool_chars = MAX_TOOL_CHARS
    """A tool whose name, description and inputSchema take more JSON characters than this
    (they go into every model request) is not offered, with a warning; its outputSchema
    (checked, as they are, when it is listed) counts too."""
    max_listing_chars = 500_000
    """A listing whose offered tools take more than this in all is refused, as one past
    `max_tools` is."""

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
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ValueError(f"invalid MCP server name {name!r}: use 1-64 letters, digits, _ or -")
        if prefix is not None and not (isinstance(prefix, str) and NAME.fullmatch(prefix)):
            raise ValueError(f"invalid tool prefix {prefix!r}: use letters, digits, _ or -")
        if not isinstance(trust, bool):
            raise TypeError(f"MCP server {name!r}: trust must be a bool")
        self._transport = transport
        self.name = name
        self.prefix = prefix
        self.trust = Trust(trust)
        owner = f"MCP server {name!r}"
        self.timeout = check_timeout(owner, timeout)
        self.start_timeout = check_timeout(owner, start_timeout, "start_timeout")
        self._link: Link | None = None
        self._retired: set[Link] = set()  # dropped, ending when their calls under way end
        self._lock: asyncio.Lock | None = None
        # The hosts (an Agent's tools each) using it: closed only when the last lets go, so
        # one server object may serve Agents made per request (`release`).
        self._holders: set[int] = set()
        self._offer = Offer()  # the tools of the last listing
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
        if not isinstance(command, str) or not command.strip():
            raise ValueError(f"MCP server {name!r}: command must name a program, not {command!r}")
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
        """The command line or URL (a URL's credentials masked), for the debug log only."""
        return self._transport.describe()

    def label(self) -> str:
        """The program (stdio) or scheme, host and port (HTTP): what a run may show."""
        return self._transport.label()

    def origin(self) -> ToolOrigin:
        """Where its tools come from (`ToolSpec.origin`): its name, how it is reached."""
        return tool_origin(self.name, self._transport)

    def redact(self, text: str) -> str:
        """`text` with the arguments, URL path and credentials of the server masked."""
        return self._transport.redact(text)

    def open(self, on_lost: OnLost) -> contextlib.AbstractAsyncContextManager[Any]:
        """The transport's read and write streams (the connection enters this), its requests
        bounded by the server's `timeout`."""
        return self._transport.open(on_lost, self.timeout)

    def __repr__(self) -> str:
        return f"<MCPServer {self.name} {self.label()}>"

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
            link = Link(self)
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
        # Retired, not closed: a call under way on it still gets its answer.
        link, self._link = self._link, None
        if link is not None:
            self._retired = {old for old in self._retired if not old.closed} | {link}
            await link.retire()

    def hold(self, holder: object) -> None:
        """Count `holder` (a host of an Agent's tools) as using the server (`release`)."""
        self._holders.add(id(holder))

    async def release(self, holder: object) -> None:
        """`holder` is done with the server: closed once no other holder uses it (another
        Agent's call under way on it is not cut)."""
        self._holders.discard(id(holder))
        if not self._holders:
            await self.close()

    async def close(self) -> None:
        """Stop the server (stdio) or end the session (HTTP), cutting calls under way."""
        links, self._link, self._retired = [self._link, *self._retired], None, set()
        for link in links:
            if link is not None:
                await link.close()

    def on_listed(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every new listing of the server's tools."""
        self._listeners.append(listener)

    def listed(self, link: Link) -> None:
        """Offer the tools `link` listed (the connection calls this)."""
        if link is not self._link:
            return  # the listing of a connection since dropped
        self._offer = offer(self, link.tools, self._offer)
        self.listings += 1
        for listener in self._listeners:
            listener()

    # ----------------------------------------------------------------- tools

    def specs(self) -> list[ToolSpec]:
        """The specs of the tools of the last listing, under their exposed names."""
        return list(self._offer.specs.values())

    def spec(self, name: str) -> ToolSpec | None:
        """One tool's spec, or None."""
        return self._offer.specs.get(name)

    def names(self) -> Sequence[str]:
        """The exposed tool names of the last listing."""
        return list(self._offer.specs)

    def argument_problem(self, name: str, args: dict[str, Any]) -> str | None:
        """What `call` would answer for `args` without sending them (they fail the tool's
        inputSchema, or cannot be checked safely), checked as `call` checks them; None when
        they would be sent."""
        refused = check_arguments(name, args, self._offer.schemas.get(name))
        return None if refused is None else refused["content"]

    async def call(self, name: str, args: dict[str, Any], idempotency_key: str) -> ToolResult:
        """Call one tool; every failure (of the tool or of the server) is an error result."""
        # Checked before anything is sent: a bad call is the model's to fix (and counted as
        # such), and arguments the SDK cannot write would break the connection.
        invalid = check_arguments(name, args, self._offer.schemas.get(name))
        if invalid is not None:
            return invalid
        # Sent again at most once, on a new session, and only when the server refused this
        # very request as a lost session (resend.py): it never ran.
        result = await self._call_once(name, args, idempotency_key)
        if isinstance(result, Refused):
            _log.info("MCP server %r: %r is sent again on a new session", self.name, name)
            result = await self._call_once(name, args, idempotency_key)
        if isinstance(result, Refused):  # refused on the new session too: not sent a third time
            return await self._failed(name, result.error, result.link, lost=True)
        return result

    async def _call_once(self, name: str, args: dict[str, Any], key: str) -> ToolResult | Refused:
        try:
            await self.start()
        except MCPServerError as exc:
            return server_error(self.name, name, exc.problem)
        # The call's time starts once the server is up: a (re)start is `start_timeout`'s.
        started = asyncio.get_running_loop().time()
        deadline = None if self.timeout is None else started + self.timeout
        link = self._link
        if link is None or link.session is None:
            return server_error(self.name, name, "the connection closed")
        async with link.in_use():  # a connection dropped meanwhile ends only after this call
            return await self._send(link, name, args, key, deadline)

    async def _send(
        self, link: Link, name: str, args: dict[str, Any], key: str, deadline: float | None
    ) -> ToolResult | Refused:
        loop = asyncio.get_running_loop()
        run = tool_run.get()

        async def progress(done: float, total: float | None, message: str | None) -> None:
            if run is not None:  # progress becomes a `tool_progress` event of the run
                await run.progress(message or "", {"progress": done, "total": total})

        # The whole call within `timeout`, not only its request. Its structuredContent is
        # checked here (check_output), on RE2, not by the SDK on Python's `re` (connection.py).
        limit = asyncio.timeout_at(deadline)
        try:
            async with limit:
                result = await link.session.call_tool(
                    self._offer.original.get(name, name),
                    args,
                    read_timeout_seconds=self.timeout,
                    progress_callback=progress,
                    meta={IDEMPOTENCY_META: key},
                )
        except asyncio.CancelledError:
            raise  # the SDK has sent `notifications/cancelled` on the way out
        except Exception as exc:
            if isinstance(exc, TimeoutError) and limit.expired() and self.timeout is not None:
                return timed_out(name, self.timeout)
            if refused(link, key):
                return Refused(exc, link)
            return await self._failed(name, exc, link)
        bad = check_output(name, result, self._offer.outputs.get(name))
        if bad is not None:
            return bad
        refreshing = link.refreshing
        if refreshing is not None and not refreshing.done():
            # A change announced during the call (before its answer) is in the next turn if
            # it is listed within the call's time; past it, the call returns and the listing
            # goes on by itself (the model sees the tools listed before until it lands).
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is None or remaining > 0:
                await asyncio.wait({refreshing}, timeout=remaining)
        return to_result(result)

    async def _failed(
        self, name: str, exc: Exception, link: Link, *, lost: bool = False
    ) -> ToolResult:
        code = getattr(exc, "code", None) if type(exc).__name__ == "MCPError" else None
        # An error may name the URL or the command line it was for: the model, the journal
        # and the log get it masked.
        shown = self.redact(str(exc))
        if lost:
            # The server refused this call as a lost session (it restarted): whatever the
            # error the SDK made of it, the connection is done; the next call makes a new one.
            problem = "it no longer knows the session (HTTP 404: restarted?)"
            await self._forget(link)
            return server_error(self.name, name, f"{problem}; it is connected to on the next call")
        if code == _REQUEST_TIMEOUT:
            return error_result(
                "timeout", f"Tool {name!r} timed out after {self.timeout:g} seconds."
            )
        if code == _INVALID_PARAMS:
            # The server refused the arguments: the model's to fix, counted towards
            # max_invalid_tool_args as a local tool's refusal is.
            return error_result(INVALID_ARGUMENTS, f"Invalid arguments for tool {name!r}: {shown}")
        if code is not None and code != _CONNECTION_CLOSED:
            # Another JSON-RPC error answer (an unknown tool, say): the server lives on.
            return error_result("tool_exception", f"Tool {name!r} failed: {shown}")
        # The connection broke: forget it, so the next call starts the server again.
        _log.warning("MCP server %r failed during %r: %s", self.name, name, shown)
        await self._forget(link)
        problem = self.redact(say(exc))
        return server_error(self.name, name, f"{problem}; it is restarted on the next call")

    async def _forget(self, link: Link) -> None:
        # Only this call's connection: another call may have connected again meanwhile.
        if self._link is link:
            await self._drop()
