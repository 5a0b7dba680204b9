"""When an MCP HTTP server has lost the session: a 404 that is not its answer to the request.

The MCP spec has a server answer 404 to a session it no longer knows (it restarted, or ended
the session): it did not handle the request, which may then be sent again on a new session.
But a server, or a gateway in front of it, may also answer a request it handled with 404: a
JSON-RPC error for that request's id (the SDK's client reads such a body as the call's
error). So a 404 is a lost session only when its body is plainly no answer to the request:
no JSON-RPC body (a router's "Not Found"), or one with another id (the SDK server's own
"Session not found" has `id: null`). What cannot be told (an event stream, a body cut off)
counts as an answer: a call is sent again only when it is certain the server did not run it.

A 404 to the client's standing GET stream says the server has no stream there (as 405 does),
nothing of the session its POSTs use; a DELETE ends the session anyway. Neither is a loss.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["SESSION_HEADER", "OnLost", "SessionLost", "answers", "lost_session"]

SESSION_HEADER = "mcp-session-id"  # the SDK's MCP_SESSION_ID, kept here to import it lazily


@dataclass(frozen=True, slots=True)
class SessionLost:
    """An HTTP server answered 404 to a POST carrying a session id, with no answer to it: it
    no longer knows the session (it restarted, or ended it), and did not handle the request."""

    request: bytes  # the JSON-RPC message it refused
    answer: bytes  # the 404's body (`{"id": null, ...}`, a router's page, or nothing)


OnLost = Callable[[SessionLost], None]


async def lost_session(response: Any) -> SessionLost | None:
    """What an HTTP answer (an httpx response, its body not read yet) says of the session: a
    `SessionLost` for a 404 to a POST with a session id that is not an answer to it, else None."""
    request = response.request
    if (
        response.status_code != 404
        or request.method != "POST"
        or SESSION_HEADER not in request.headers
    ):
        return None
    if response.headers.get("content-type", "").lower().startswith("text/event-stream"):
        return None  # its answer may be on the way in the stream: not certain it did not run
    try:
        # httpx keeps what `aread` read: the SDK's own `aread` of the body (it reads a JSON
        # error at any status) then gets the same bytes without touching the network.
        answer = await response.aread()
    except Exception:  # cut off mid-body: what it said is unknown, so it may have run
        return None
    if answers(answer, request.content):
        return None
    return SessionLost(bytes(request.content), bytes(answer))


def answers(answer: bytes, request: bytes) -> bool:
    """Whether `answer` holds a JSON-RPC response (a result or an error) to `request`'s id."""
    try:
        sent = json.loads(request)
        got = json.loads(answer) if answer.strip() else None
    except ValueError:  # not JSON (a router's "Not Found" page): no answer
        return False
    rid = sent.get("id") if isinstance(sent, dict) else None
    if rid is None:
        return False  # a notification (or a response of ours): nothing the server answers
    for message in got if isinstance(got, list) else [got]:
        if not isinstance(message, dict) or not ({"result", "error"} & message.keys()):
            continue
        got_id = message.get("id")
        # An id spelled as a string for a number is still this request's: a doubt is taken
        # as an answer (the call may have run).
        if got_id is not None and (got_id == rid or str(got_id) == str(rid)):
            return True
    return False
