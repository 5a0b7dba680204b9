"""`loomgraph mcp-serve`: an Agent offered as an MCP server (stdio, or streamable HTTP).

Tools: `run` (a prompt; the run's events stream as progress notifications; returns the
answer, status and run id) and `resume` (answers a run awaiting approval, or goes on with
one that stopped). The `mcp` SDK is imported only when the command runs.
"""

import argparse
import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from loomgraph.cli.agent_args import add_loaded_agent_option, load_agent
from loomgraph.cli.output import EXIT_OK
from loomgraph.protocols.events import RUN_COMPLETED, Event

if TYPE_CHECKING:  # the Agent is imported when the command runs, not when the CLI starts
    from loomgraph.agent.agent import Agent
    from loomgraph.agent.result import RunResult

_PROGRESS_CHARS = 300  # a progress message is a line a client shows, not the whole payload


def add_parser(subparsers: Any) -> None:
    """Add the `mcp-serve` subcommand to the `loomgraph` command's subparsers."""
    serve = subparsers.add_parser(
        "mcp-serve", help="offer an agent as an MCP server (stdio, or --http PORT)"
    )
    add_loaded_agent_option(serve)
    serve.add_argument(
        "--http", type=int, default=None, metavar="PORT", help="serve streamable HTTP on PORT"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on with --http")


def handle(args: argparse.Namespace) -> int:
    """Serve until stdin closes (stdio) or the process is stopped (HTTP)."""
    app = build_server(load_agent(args.agent))
    if args.http is None:
        app.run("stdio")
    else:
        app.run("streamable-http", host=args.host, port=args.http)
    return EXIT_OK


def build_server(agent: "Agent") -> Any:
    """An MCP server (the SDK's `MCPServer`) whose tools run and resume `agent`'s runs."""
    from mcp.server.mcpserver import Context
    from mcp.server.mcpserver import MCPServer as SDKServer
    from mcp.types import ToolAnnotations

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await agent.aclose()  # stops the agent's own MCP servers, closes its journal

    app = SDKServer("loomgraph", instructions=agent.instructions or None, lifespan=lifespan)

    @app.tool(name="run", annotations=ToolAnnotations(openWorldHint=True))
    async def run(
        prompt: str, ctx: Context, user_id: str | None = None, session_id: str | None = None
    ) -> dict[str, Any]:
        """Run the agent on a prompt; returns its answer, status and run id. The run's
        events are sent as progress notifications."""
        stream = agent.stream(prompt, user_id=user_id, session_id=session_id)
        return await _follow(stream, ctx)

    @app.tool(name="resume", annotations=ToolAnnotations(openWorldHint=True))
    async def resume(
        run_id: str,
        ctx: Context,
        approve: bool | None = None,
        args: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Go on with a stopped run: approve (true) or deny (false) the call it waits for,
        optionally with edited arguments; without `approve`, resume a crashed run."""
        options: dict[str, Any] = {}
        if approve is not None:
            options["approve"] = {"args": args} if approve and args is not None else approve
        return await _follow(agent.resume_stream(run_id, **options), ctx)

    return app


async def _follow(stream: AsyncIterator[Event], ctx: Any) -> dict[str, Any]:
    """Relay a run's events as progress notifications; the outcome as the tool's result."""
    outcome: dict[str, Any] = {}
    count = 0
    async for event in stream:
        count += 1
        await ctx.report_progress(count, None, _line(event))
        if event.kind == RUN_COMPLETED:
            outcome = event.payload.get("result") or {}
    if not outcome:
        raise RuntimeError("the run ended without a result")
    from loomgraph.agent.result import RunResult

    return _summary(RunResult.from_dict(outcome))


def _line(event: Event) -> str:
    detail = json.dumps(event.payload, default=str, ensure_ascii=False)
    if len(detail) > _PROGRESS_CHARS:
        detail = detail[: _PROGRESS_CHARS - 1] + "…"
    return f"{event.kind} {detail}"


def _summary(result: "RunResult") -> dict[str, Any]:
    summary: dict[str, Any] = {
        "run_id": result.run_id,
        "status": str(result.status),
        "answer": result.output,
    }
    if result.reason:
        summary["reason"] = result.reason
    pending = result.pending
    if pending is not None and pending.call is not None:
        summary["awaiting_approval"] = {
            "tool": pending.call["tool"],
            "args": pending.call.get("args"),
            "rule": pending.rule,
        }
    return summary
