"""Who calls `loomgraph mcp-serve`'s tools: never a tool argument.

Over stdio the caller is the user the server was started as (`--user`, with the approver role
only with `--approver`): the process speaks for whoever launched it. Over `--http` each
request authenticates with an API key of `loomgraph serve`'s key store (`Authorization:
Bearer KEY` or `X-API-Key: KEY`), looked up per request in the journal's database, so a
revoked key is refused from the next request on; no valid key is 401. The key's user is
also the owner of the MCP session the request opened: the SDK answers another user's
requests to that session as for an unknown session (404).

The `mcp` SDK, starlette and the key store are imported only when the command runs.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from loomgraph.serve.auth import Caller
    from loomgraph.serve.store import ServeStore

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    App = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["KeyAuth", "caller_of", "checked_tool", "key_store_problem"]

# Where `KeyAuth` leaves the request's caller, for the tools to read.
CALLER_SCOPE_KEY = "loomgraph.caller"
NO_CALLER = (
    "who calls is not an argument: over stdio it is the --user mcp-serve was started with, "
    "over --http the user of the request's API key"
)


def caller_of(ctx: Any, fixed: Caller | None) -> Caller:
    """The caller of a tool call: `fixed` (stdio), else the one `KeyAuth` authenticated for
    the HTTP request carrying the call. Never taken from the call's arguments."""
    from loomgraph.serve.auth import Caller

    if fixed is not None:
        return fixed
    from mcp.server.mcpserver.exceptions import ToolError

    request = ctx.request_context.request
    scope = getattr(request, "scope", None)
    found = scope.get(CALLER_SCOPE_KEY) if isinstance(scope, dict) else None
    if not isinstance(found, Caller) or not found.user_id:
        raise ToolError("authentication required: send 'Authorization: Bearer <API key>'")
    return found


class KeyAuth:
    """ASGI middleware in front of the SDK's streamable HTTP app: every HTTP request needs a
    key of the store (401 otherwise). The caller goes into the request's scope for the
    tools, and as the SDK's authenticated user, which binds each MCP session to the user
    whose request opened it."""

    def __init__(self, app: App, store: ServeStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the lifespan
            await self.app(scope, receive, send)
            return
        from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
        from mcp.server.auth.provider import AccessToken
        from starlette.datastructures import Headers

        from loomgraph.serve.auth import Caller, sent_key
        from loomgraph.serve.errors import Unauthorized

        # (Not the viewer's cookie: a browser sends it with any request to the host.)
        try:
            key = sent_key(Headers(scope=scope))
        except Unauthorized as refused:
            await _unauthorized(send, str(refused))
            return
        found = await self.store.key(key) if key else None
        if found is None:
            await _unauthorized(send, _asked("a valid API key" if key else "an API key"))
            return
        caller = Caller(found.user_id, found.approver)
        scope[CALLER_SCOPE_KEY] = caller
        token = AccessToken(
            token="",  # the key is not kept
            client_id=caller.user_id,
            subject=caller.user_id,
            scopes=["approver"] if caller.approver else [],
        )
        scope["user"] = AuthenticatedUser(token)
        await self.app(scope, receive, send)


def _asked(what: str) -> str:
    return f"authentication required: send {what} as 'Authorization: Bearer <API key>'"


async def _unauthorized(send: Send, message: str) -> None:
    body = json.dumps({"error": {"type": "unauthorized", "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="loomgraph"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def key_store_problem(runtime: Any, agent_spec: str) -> str | None:
    """Why `--http` cannot authenticate anyone with this journal's key store, or None: an
    in-memory journal keeps no keys, and a store without keys would refuse every request."""
    from loomgraph.serve.sql_store import SqliteStore
    from loomgraph.serve.store import MemoryStore, open_store

    add = f"add one with `loomgraph keys add USER --agent {agent_spec}` (--approver to approve)"
    store = open_store(runtime)
    if isinstance(store, MemoryStore):
        return (
            "--http authenticates every request with an API key kept in the agent's journal, "
            "and this agent's journal is in memory (it keeps no keys): give the agent a "
            f"durable runtime (sqlite: or postgres:), then {add}"
        )
    if isinstance(store, SqliteStore) and not Path(store.path).exists():
        return f"--http needs an API key, and the agent's journal holds none yet: {add}"
    try:
        keys = await store.keys()
    finally:
        await store.close()
    if not keys:
        return f"--http needs an API key, and the agent's journal holds none yet: {add}"
    return None


def checked_tool(fn: Callable[..., Awaitable[Any]]) -> Any:
    """`fn` as the SDK's `Tool`, refusing any argument it does not list (`user_id` above all:
    who calls is never an argument; its schema says so, `additionalProperties: false`: the
    SDK would drop one silently), and telling arguments that do not fit as one line each
    (`limit: Input should be a valid integer`), not as pydantic's report of its model."""
    from mcp.types import ToolAnnotations
    from pydantic import ConfigDict, model_validator

    tool = _checked_tool_class().from_function(
        fn, name=fn.__name__, annotations=ToolAnnotations(openWorldHint=True)
    )
    loose = tool.fn_metadata.arg_model

    def known_arguments(data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(str(k) for k in set(data) - set(loose.model_fields))
            if unknown:
                takes = ", ".join(loose.model_fields)
                why = f"; {NO_CALLER}" if "user_id" in unknown else ""
                raise ValueError(
                    f"unknown argument(s) {', '.join(unknown)}: {tool.name} takes {takes}{why}"
                )
        return data

    tool.fn_metadata.arg_model = type(
        loose.__name__,
        (loose,),
        {
            "__module__": __name__,
            "model_config": ConfigDict(extra="forbid", arbitrary_types_allowed=True),
            "known_arguments": model_validator(mode="before")(known_arguments),
        },
    )
    tool.parameters["additionalProperties"] = False
    return tool


@cache
def _checked_tool_class() -> type[Any]:
    """The SDK's `Tool`, telling a call's arguments that fail its model in words."""
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.server.mcpserver.tools import Tool
    from pydantic import ValidationError

    class CheckedTool(Tool):
        async def run(self, arguments: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            try:
                return await super().run(arguments, *args, **kwargs)
            except ToolError as err:
                cause = err.__cause__
                model = self.fn_metadata.arg_model.__name__
                if not (isinstance(cause, ValidationError) and cause.title == model):
                    raise
                said = "; ".join(_argument_problem(e) for e in cause.errors(include_url=False))
                raise ToolError(f"Error executing tool {self.name}: {said}") from cause

    return CheckedTool


def _argument_problem(error: Any) -> str:
    """One error of a call's arguments: `argument: why` (why alone for the whole call)."""
    why = str(error["msg"]).removeprefix("Value error, ")
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {why}" if where else why
