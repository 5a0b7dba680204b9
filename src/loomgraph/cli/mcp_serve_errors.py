"""What `loomgraph mcp-serve` tells a client that something went wrong: always something.

- A tool's failure is a tool error saying what happened (`answered`). loomgraph's typed
  errors are read with `loomgraph serve`'s table (`serve.errors.status_of`, `message_of`), so
  a client is told over MCP what HTTP tells it: a prompt over the size limit (`InputTooLarge`),
  a run driven elsewhere (`RunConflict`, never naming the lease owner's host and process), a
  finished run (`RunFinished`), a stale answer (`ApprovalNotPending`), each named by its type.
  An unknown run, another agent's and another user's all read "no run 'ID'". What is the
  server's own fault is an error id, its exception in the server's log (`internal_message`),
  never its text (a connection string, a path).
- Over stdio, a line the SDK cannot read as a JSON-RPC message is answered with a JSON-RPC
  error (`serve_stdio`); the SDK would hand it to the server as an exception it only logs at
  debug level, and the client would wait for ever. A request whose JSON holds a lone
  surrogate escape (`"\\ud800"`, which JavaScript's JSON.stringify writes for half a UTF-16
  pair) is answered for its id, saying where the text is not valid Unicode.

The `mcp` SDK is imported only when the command runs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

__all__ = ["answered", "serve_stdio", "tool_error", "unreadable"]

log = logging.getLogger("loomgraph.mcp_serve")

_SHOWN_CHARS = 300  # of an error's text in an answer: a line, not a whole message

P = ParamSpec("P")
T = TypeVar("T")


def answered(tool: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """`tool` (a tool's function) raising a ToolError for whatever it raises (`tool_error`),
    so the SDK never answers the bare "Error executing tool" of an unexpected exception."""
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.shared.exceptions import MCPError

    @functools.wraps(tool)  # the SDK reads the tool's arguments from its signature
    async def answering(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await tool(*args, **kwargs)
        except (ToolError, MCPError):  # said for the client already (MCPError: by the SDK)
            raise
        except Exception as err:
            raise tool_error(err, tool.__name__) from None

    return answering


def tool_error(err: Exception, tool: str) -> Exception:
    """The ToolError telling a client of `err`, raised by the tool `tool`, what `loomgraph
    serve` tells it over HTTP: `Type: message`; "no run 'ID'" alone for a run not shown to
    exist (its type would tell it exists); an error id for the server's own fault."""
    from mcp.server.mcpserver.exceptions import ToolError

    from loomgraph.serve.errors import internal_message, message_of, status_of

    status, _ = status_of(err)
    if status == 500:
        return ToolError(internal_message(err, f"the {tool} tool"))
    if status == 404:
        return ToolError(message_of(err))
    return ToolError(f"{type(err).__name__}: {message_of(err)}")


async def serve_stdio(server: Any) -> None:
    """Serve `server` (the SDK's `MCPServer`) over stdin and stdout, as its `run("stdio")`
    does, with every line the SDK cannot read answered (`unreadable`)."""
    from mcp.server.stdio import stdio_server

    # What `MCPServer.run_stdio_async` serves: the SDK takes no stream of another's there.
    lowlevel = server._lowlevel_server
    async with stdio_server() as (read_stream, write_stream):
        messages = _Answering(read_stream, write_stream)
        await lowlevel.run(messages, write_stream, lowlevel.create_initialization_options())


class _Answering:
    """The SDK's stream of what stdin carries, each line it could not read (an exception
    in the stream) answered on `write` instead of reaching the server."""

    def __init__(self, read: Any, write: Any) -> None:
        self._read = read
        self._write = write

    @property
    def last_context(self) -> Any:
        """The context the last message was sent with (the SDK's server reads it)."""
        return getattr(self._read, "last_context", None)

    async def receive(self) -> Any:
        """The next message the SDK read; the lines it could not read are answered."""
        import anyio
        from mcp.shared.message import SessionMessage

        while True:
            item = await self._read.receive()
            if not isinstance(item, Exception):
                return item
            # A closed writer: the client is gone, and nothing is waiting for an answer.
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                await self._write.send(SessionMessage(unreadable(item)))

    async def aclose(self) -> None:
        """Close the SDK's stream."""
        await self._read.aclose()

    def __aiter__(self) -> _Answering:
        return self

    async def __anext__(self) -> Any:
        import anyio

        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> _Answering:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


def unreadable(problem: Exception) -> Any:
    """The JSON-RPC error (`JSONRPCError`) answering a line the SDK could not read, given the
    exception it raised: -32700 for a line that is not JSON (a lone surrogate is not valid
    Unicode text), for the request's id when Python's reader, which takes a lone surrogate,
    finds one; -32600 for JSON that is no JSON-RPC message. Else the id is null."""
    from mcp_types import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError

    line = _line_of(problem)
    message: Any = None
    if line is None:
        code, said = INVALID_REQUEST, f"Invalid Request: not a JSON-RPC message: {_first(problem)}"
    else:
        code = PARSE_ERROR
        try:
            message = json.loads(line)
        except ValueError as err:
            said = f"Parse error: the line is not JSON: {err}"
        else:
            said = f"Parse error: {_why_not_read(message, problem)}"
    log.warning("answered a line that is not a JSON-RPC message: %s", said)
    error = ErrorData(code=code, message=said)
    return JSONRPCError(jsonrpc="2.0", id=_request_id(message), error=error)


def _line_of(problem: Exception) -> str | None:
    """The line the SDK could not parse as JSON, as its error holds it; None for another
    error (JSON that is no JSON-RPC message: its errors hold parts of it only)."""
    from pydantic import ValidationError

    if not isinstance(problem, ValidationError):
        return None
    for error in problem.errors(include_url=False):
        found = error.get("input")
        if error["type"] == "json_invalid" and isinstance(found, str):
            return found
    return None


def _first(problem: Exception) -> str:
    """The first thing wrong that `problem` names, in a line (a message's errors may be many)."""
    from pydantic import ValidationError

    if isinstance(problem, ValidationError) and problem.error_count():
        error = problem.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in error["loc"]) or "the message"
        return f"{where}: {error['msg']}"
    return str(problem)[:_SHOWN_CHARS]


def _why_not_read(message: Any, problem: Exception) -> str:
    """Why JSON Python reads is none the SDK reads: in words `loomgraph serve` uses for a body
    (`check_value`: a lone surrogate is "not valid Unicode text"), else the SDK's own."""
    from loomgraph.serve.bodies import check_value
    from loomgraph.serve.errors import ServeError

    try:
        check_value(message, "the message")
    except ServeError as err:
        return str(err)
    return _first(problem)


def _request_id(message: Any) -> int | str | None:
    """The id of `message` when it is a request (a notification, or a response to the
    server, is answered with id null, as JSON-RPC answers what it cannot read)."""
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return None
    found = message.get("id")
    return found if isinstance(found, int | str) and not isinstance(found, bool) else None
