"""The agent the serving tests serve (in-process, and by `loomgraph serve --agent
serve_agent:make_agent` in a subprocess): a scripted model, a destructive `pay` tool that asks
for approval, a `step` tool for runs of several steps, a journal file named by SERVE_JOURNAL
(with SERVE_PG_SCHEMA, the journal is that schema of the test server's Postgres instead).
With SERVE_APPROVAL_TIMEOUT, approval requests expire after that many seconds, on a desk clock
the test moves through the file SERVE_CLOCK_FILE (tests/desk_clock.py)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from loomgraph import Agent, tool
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.runtime import SqliteRuntime

PAID: list[dict[str, Any]] = []


@tool(destructive=True)
def pay(to: str, amount: int) -> str:
    """Pay someone."""
    PAID.append({"to": to, "amount": amount})
    return f"paid {amount} to {to}"


@tool(trusted=True)
async def step(n: int) -> str:
    """One step of a long task."""
    await asyncio.sleep(float(os.environ.get("SERVE_STEP_DELAY", "0.01")))
    return f"step {n} done"


def _prompt(request: Any) -> str:
    for message in request.messages:
        if message.get("role") == "user":
            return str(message.get("content") or "")
    return ""


def script(request: Any) -> Any:
    """`pay ...` pays acme 5; `steps N` calls `step` N times; anything else is echoed."""
    prompt, i = _prompt(request), request.call_index
    if prompt.startswith("pay") and i == 0:
        return {
            "tool_calls": [{"id": "call_pay", "tool": "pay", "args": {"to": "acme", "amount": 5}}]
        }
    if prompt.startswith("steps "):
        n = int(prompt.split()[1])
        if i < n:
            return {"tool_calls": [{"id": f"call_step{i}", "tool": "step", "args": {"n": i}}]}
    return f"done: {prompt}"


def make_agent(journal: str | None = None, **options: Any) -> Agent:
    """The served agent, its journal in `journal` (default: $SERVE_JOURNAL)."""
    path = journal or os.environ["SERVE_JOURNAL"]
    if "SERVE_APPROVAL_TIMEOUT" in os.environ:
        import desk_clock

        desk_clock.follow_file(os.environ["SERVE_CLOCK_FILE"])
        timeout = float(os.environ["SERVE_APPROVAL_TIMEOUT"])
        options.setdefault("permissions", StandardPermissions(approval_timeout_s=timeout))
    runtime: Any = SqliteRuntime(path)
    if schema := os.environ.get("SERVE_PG_SCHEMA"):
        import pg
        from loomgraph.runtime.postgres import PostgresRuntime

        runtime = PostgresRuntime(pg.postgres_dsn(), schema=schema)
    return Agent(
        "You pay bills.",
        model=ScriptedModel(script),
        tools=[pay, step],
        runtime=runtime,
        **options,
    )
