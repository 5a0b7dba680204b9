"""What rules and hooks read of a tool call: its arguments as the tool will receive them.

A Python tool's arguments are validated in pydantic's lax mode, which converts what the model
sent (`"yes"` or `1` for a bool parameter, `"01"` for an int one). A rule matched on the
arguments as sent would not see the value that runs, so the permissions read both spellings
and the stricter verdict stands: a spelling never makes a call allowed.
"""

from __future__ import annotations

from typing import Any

from loomgraph.engine.scope import RunScope
from loomgraph.protocols import Decision, ToolCall, ToolSpec

_STRICTNESS = {"allow": 0, "ask": 1, "deny": 2}


def received_call(scope: RunScope, call: ToolCall) -> ToolCall | None:
    """The call with its arguments as its tool will receive them, when something reads them
    and they differ from what was sent; else None."""
    reader = scope.arg_reader
    if reader is None:
        return None
    args = reader.received_args(call)
    if args is None or _same(args, call.get("args")):
        return None
    return ToolCall(id=call["id"], tool=call["tool"], args=args)


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON: `1 == True == 1.0` in Python, but not to a rule."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


async def permission_for(scope: RunScope, call: ToolCall, spec: ToolSpec) -> Decision:
    """The permissions' verdict on the call as sent and, when its tool will receive other
    values, as received: the stricter of the two."""
    check = scope.deps.permissions.check
    sent = await check(call, spec, user_id=scope.user_id)
    received = received_call(scope, call) if scope.deps.permissions_read_args else None
    if received is None:
        return sent
    read = await check(received, spec, user_id=scope.user_id)
    return read if _STRICTNESS[read.verdict] > _STRICTNESS[sent.verdict] else sent
