"""An agent for `loomgraph mcp-serve` tests: it calls `refund` (asks first) then answers."""

from __future__ import annotations

from loomgraph import Agent, tool
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel


@tool(destructive=True)
def refund(order: str) -> str:
    """Refund an order."""
    return f"refunded {order}"


def make_agent() -> Agent:
    """A fresh agent: one refund call (which asks), then the answer."""
    model = ScriptedModel(
        [{"tool_calls": [{"tool": "refund", "args": {"order": "A-1"}}]}, "refund done"]
    )
    return Agent("Refund desk.", model=model, tools=[refund], permissions=StandardPermissions())
