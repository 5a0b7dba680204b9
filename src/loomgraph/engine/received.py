"""What rules and hooks read of a tool call: its arguments as the tool will receive them.

A Python tool's arguments are validated in pydantic's lax mode, which converts what the model
sent (`"yes"` or `1` for a bool parameter, `"01"` for an int one). A rule matched on the
arguments as sent would not see the value that runs, so the permissions read both spellings
and the stricter verdict stands: a spelling never makes a call allowed. The taint check of an
egress call reads both too (`untrusted_in`), with this same conversion.
"""

from __future__ import annotations

from loomgraph.engine.scope import RunScope
from loomgraph.engine.taint import UntrustedText, parameter_names
from loomgraph.protocols import ArgumentReader, Decision, ToolCall, ToolSpec
from loomgraph.protocols.json_values import same_json

_STRICTNESS = {"allow": 0, "ask": 1, "deny": 2}


def received_call(scope: RunScope, call: ToolCall) -> ToolCall | None:
    """The call with its arguments as its tool will receive them, when something reads them
    and they differ from what was sent; else None."""
    return _received(scope.arg_reader, call)


def _received(reader: ArgumentReader | None, call: ToolCall) -> ToolCall | None:
    """The call as `reader` says its tool will receive it, when that differs from the call."""
    if reader is None:
        return None
    args = reader.received_args(call)
    if args is None or same_json(args, call.get("args")):
        return None
    return ToolCall(id=call["id"], tool=call["tool"], args=args)


def untrusted_in(
    untrusted: UntrustedText, reader: ArgumentReader | None, call: ToolCall, spec: ToolSpec
) -> tuple[bool, ToolCall | None]:
    """Whether the call carries untrusted text as sent or as its tool will receive it (its
    tool's own parameter names, as keys, carry none), and the call as received when it was
    read for that (the call itself when nothing converts its arguments; None when it was not
    read)."""
    names = parameter_names(spec.get("parameters"))
    if untrusted.carried_by(call["args"], names):
        return True, None  # tainted as sent: no conversion needed
    # Read whether or not rules or hooks read arguments (`RunScope.arg_reader`): only this
    # egress call in a run with untrusted text pays for it.
    received = _received(reader, call) or call
    return received is not call and untrusted.carried_by(received["args"], names), received


async def permission_for(
    scope: RunScope, call: ToolCall, spec: ToolSpec, read: ToolCall | None = None
) -> Decision:
    """The permissions' verdict on the call as sent and, when its tool will receive other
    values, as received: the stricter of the two. `read` is the call as received when it was
    read already (`untrusted_in`), so that it is not converted twice."""
    check = scope.deps.permissions.check
    sent = await check(call, spec, user_id=scope.user_id)
    received = None
    if scope.deps.permissions_read_args:
        received = received_call(scope, call) if read is None else read
    if received is None or received is call:
        return sent
    got = await check(received, spec, user_id=scope.user_id)
    return got if _STRICTNESS[got.verdict] > _STRICTNESS[sent.verdict] else sent
