"""An agent for the `loomgraph mcp-serve` identity tests (tests/test_mcp_serve_identity.py),
served in a subprocess and used in the test's own process over one SQLite journal and one
memory file in the folder $MCP_IDENTITY_DIR.

`refund ORDER` calls the destructive `refund` tool (it asks first), which appends ORDER to
`refunds.log` in that folder, so a test sees whether it ran; any other prompt is answered
with the conversation the model was given (memory's history included)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from loomgraph import Agent, tool
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel


def folder() -> Path:
    return Path(os.environ["MCP_IDENTITY_DIR"])


@tool(destructive=True)
def refund(order: str) -> str:
    """Refund an order."""
    with (folder() / "refunds.log").open("a", encoding="utf-8") as log:
        log.write(order + "\n")
    return f"refunded {order}"


def _script(request: Any) -> Any:
    last = request.messages[-1]
    text = str(last.get("content") or "")
    if last.get("role") == "user" and text.startswith("refund "):
        return {"tool_calls": [{"id": "c1", "tool": "refund", "args": {"order": text[7:]}}]}
    if last.get("role") == "tool":
        return "refund done"
    seen = " | ".join(f"{m['role']}:{m.get('content')}" for m in request.messages)
    return f"HISTORY=<<{seen}>>"


def make_agent() -> Agent:
    """The served agent: its journal and memory in $MCP_IDENTITY_DIR."""
    here = folder()
    return Agent(
        "Refund desk.",
        name="desk",
        model=ScriptedModel(_script),
        tools=[refund],
        permissions=StandardPermissions(),
        memory=f"sqlite:{here / 'memory.db'}",
        runtime=f"sqlite:{here / 'journal.db'}",
        auto_extract=False,
    )
