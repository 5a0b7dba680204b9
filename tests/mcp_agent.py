"""An agent for `loomgraph mcp-serve` tests: it calls `refund` (asks first) then answers."""

from __future__ import annotations

import os

from loomgraph import Agent, tool
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel


@tool(destructive=True)
def refund(order: str) -> str:
    """Refund an order."""
    return f"refunded {order}"


def make_agent(permissions: StandardPermissions | None = None) -> Agent:
    """A fresh agent: one refund call (which asks), then the answer."""
    model = ScriptedModel(
        [{"tool_calls": [{"tool": "refund", "args": {"order": "A-1"}}]}, "refund done"]
    )
    permissions = permissions or StandardPermissions()
    return Agent("Refund desk.", model=model, tools=[refund], permissions=permissions)


def make_expiring_agent() -> Agent:
    """`make_agent`'s, its approval requests expiring after 60 s on a desk clock the test
    moves through the file MCP_CLOCK_FILE (tests/desk_clock.py)."""
    import desk_clock

    desk_clock.follow_file(os.environ["MCP_CLOCK_FILE"])
    return make_agent(StandardPermissions(approval_timeout_s=60))
