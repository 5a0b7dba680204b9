"""Which MCP call may be sent again: only one the server refused as a lost session (an HTTP
404 that is not its answer, lost.py), so it never ran. `MCPServer.call` sends it once more,
on a new session, within the call's deadline and with the same idempotency key; a call
whose connection broke after it was sent, or that the server answered, may have run, and is
never sent again."""

from __future__ import annotations

import json
from dataclasses import dataclass

from loomgraph.tools.mcp.connection import Link
from loomgraph.tools.mcp.convert import IDEMPOTENCY_META

__all__ = ["Refused", "refused"]


@dataclass(frozen=True, slots=True)
class Refused:
    """A call the server refused as a lost session: it never ran, so it may be sent again on a
    new session."""

    error: Exception  # what the SDK made of the 404
    link: Link  # the connection whose session was lost


def refused(link: Link, key: str) -> bool:
    """Whether the server refused, as a lost session, the `tools/call` carrying idempotency
    key `key` on `link` (keys are per call, so it is this call's request)."""
    return any(_carries(lost.request, key) for lost in link.lost)


def _carries(body: bytes, key: str) -> bool:
    try:
        message = json.loads(body) if body else None
    except ValueError:
        return False
    if not isinstance(message, dict) or message.get("method") != "tools/call":
        return False
    meta = (message.get("params") or {}).get("_meta") or {}
    return isinstance(meta, dict) and meta.get(IDEMPOTENCY_META) == key
