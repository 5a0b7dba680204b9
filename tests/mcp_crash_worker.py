"""A subprocess for the MCP crash test: a ReAct run whose tools are a stdio MCP server.

    python tests/mcp_crash_worker.py run    --journal sqlite:PATH --state DIR
    python tests/mcp_crash_worker.py resume --journal sqlite:PATH --state DIR --run-id ID

The server (`ledger_server.py`, written into DIR) appends `item key` to DIR/ledger for
every call, and holds the call of item "second" until DIR/released exists, so the test can
kill this process while that MCP call is under way. Prints `{"run_id": …}` first and
`{"result": …}` at the end, as JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from loomgraph import Agent
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.tools import MCPServer

SERVER = textwrap.dedent(
    '''
    import os, sys, time
    from pathlib import Path
    from mcp.server.mcpserver import MCPServer, Context

    state = Path(sys.argv[1])
    (state / "server.pid").write_text(str(os.getpid()))
    app = MCPServer("ledger")

    @app.tool()
    def record(item: str, ctx: Context) -> str:
        """Record an item in the ledger."""
        key = (ctx.request_context.meta or {}).get("io.loomgraph/idempotency-key")
        with open(state / "ledger", "a") as ledger:
            ledger.write(f"{item} {key}\\n")
        while item == "second" and not (state / "released").exists():
            time.sleep(0.05)
        return f"recorded {item}"

    app.run()
    '''
)

SCRIPT: list[Any] = [
    {"tool_calls": [{"tool": "ledger_record", "args": {"item": "first"}}]},
    {"tool_calls": [{"tool": "ledger_record", "args": {"item": "second"}}]},
    "both recorded",
]


def say(**fields: Any) -> None:
    """One JSON line on stdout, flushed at once."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def make_agent(journal: str, state: Path) -> Agent:
    """The agent: a scripted model and the ledger server, allowed without asking."""
    script = state / "ledger_server.py"
    script.write_text(SERVER)
    server = MCPServer.stdio(
        sys.executable,
        str(script),
        str(state),
        name="ledger",
        prefix="ledger",
        timeout=600,
        start_timeout=600,
    )
    return Agent(
        "x",
        model=ScriptedModel(SCRIPT),
        tools=[server],
        runtime=journal,
        permissions=StandardPermissions(allow=["ledger_*"]),
    )


async def main(args: argparse.Namespace) -> None:
    async with make_agent(args.journal, Path(args.state)) as agent:
        if args.command == "run":
            session = agent.session("record two items")
            say(run_id=session.run_id)
            result = await session.execute(agent.deps.hooks.on_event)
        else:
            result = await agent.resume(args.run_id)
        say(result={"status": str(result.status), "output": result.output})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["run", "resume"])
    parser.add_argument("--journal", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--run-id")
    asyncio.run(main(parser.parse_args()))
