"""`loomgraph mcp-serve`: an Agent offered as an MCP server (stdio, or streamable HTTP).

Tools: `run` (a prompt; the run's events stream as progress notifications; returns the
answer, status and run id, and what a waiting run waits for with its request's `key`),
`resume` (answers a run awaiting approval, naming the request's `key`, or goes on with one
that stopped) and `approvals` (an approver's list of every user's calls that wait). Who
calls is never a tool argument (`mcp_serve_callers`): over stdio the `--user` the server was
started with, over `--http` the user of each request's API key. A caller reaches only their
own runs of this agent (another user's run is not found, as an unknown one), but for an
approver's answer, which reaches any user's run (`mcp_serve_approvals`); answering needs the
approver role, and the answer is journaled with the caller's user id as approver. Every
failure, and over stdio every line that is no JSON-RPC message, is answered saying what went
wrong (`mcp_serve_errors`). The `mcp` SDK is imported only when the command runs.
"""

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from loomgraph.cli.agent_args import add_loaded_agent_option, load_agent
from loomgraph.cli.mcp_serve_approvals import (
    answered_elsewhere,
    approval_answer,
    awaiting_approval_of,
    waiting_calls,
)
from loomgraph.cli.output import EXIT_OK, EXIT_USAGE
from loomgraph.cli.serve import port
from loomgraph.protocols.events import RUN_COMPLETED, Event

if TYPE_CHECKING:  # the Agent is imported when the command runs, not when the CLI starts
    from loomgraph.agent.agent import Agent
    from loomgraph.agent.result import RunResult
    from loomgraph.protocols import RunRecord
    from loomgraph.serve.auth import Caller
    from loomgraph.serve.store import ServeStore

_PROGRESS_CHARS = 300  # a progress message is a line a client shows, not the whole payload
_DEFAULT_HOST = "127.0.0.1"


def add_parser(subparsers: Any) -> None:
    """Add the `mcp-serve` subcommand to the `loomgraph` command's subparsers."""
    serve = subparsers.add_parser(
        "mcp-serve", help="offer an agent as an MCP server (stdio, or --http PORT)"
    )
    add_loaded_agent_option(serve)
    serve.add_argument(
        "--user",
        default=None,
        metavar="USER_ID",
        help="stdio (required there): the user every call acts as; over --http each "
        "request's API key says who calls",
    )
    serve.add_argument(
        "--approver",
        action="store_true",
        help="stdio: the --user may answer approvals (over --http: keys made with --approver)",
    )
    serve.add_argument(
        "--http",
        type=port,
        default=None,
        metavar="PORT",
        help="serve streamable HTTP on PORT; every request needs an API key (`loomgraph keys add`)",
    )
    serve.add_argument(
        "--host", default=None, help=f"address to listen on with --http (default {_DEFAULT_HOST})"
    )


def _refused(reason: str) -> int:
    print(f"loomgraph: refused: {reason}", file=sys.stderr)
    return EXIT_USAGE


def _user_problem(user: str | None) -> str | None:
    if user is None:
        return (
            "over stdio mcp-serve acts as one user, given at start: add --user USER_ID "
            "(and --approver if that user may answer approvals)"
        )
    if not user.strip() or "\x00" in user:
        return f"--user {user!r} is not a user id"
    return None


def handle(args: argparse.Namespace) -> int:
    """Serve until stdin closes (stdio) or the process is stopped (HTTP)."""
    from loomgraph.serve.auth import Caller

    if args.http is None:
        if args.host is not None:
            return _refused("--host is the address of --http PORT; over stdio there is none")
        problem = _user_problem(args.user)
        if problem is not None:
            return _refused(problem)
        caller = Caller(args.user, approver=args.approver)
        agent = load_agent(args.agent)
        role = "may" if caller.approver else "may not"
        print(
            f"loomgraph: mcp-serve over stdio as user {caller.user_id!r} ({role} answer approvals)",
            file=sys.stderr,
            flush=True,
        )
        import anyio

        from loomgraph.cli.mcp_serve_errors import serve_stdio

        anyio.run(serve_stdio, build_server(agent, caller=caller))
        return EXIT_OK
    if args.user is not None or args.approver:
        return _refused(
            "over --http each request's API key says who calls (and whether they may "
            "approve): --user and --approver are for stdio"
        )
    return _serve_http(args)


def _serve_http(args: argparse.Namespace) -> int:
    from loomgraph.cli.mcp_serve_callers import KeyAuth, key_store_problem
    from loomgraph.serve.auth import is_loopback
    from loomgraph.serve.store import open_store

    host = args.host or _DEFAULT_HOST
    agent = load_agent(args.agent)
    problem = asyncio.run(key_store_problem(agent.deps.runtime, args.agent))
    if problem is not None:
        asyncio.run(agent.aclose())
        return _refused(problem)
    import uvicorn

    store = open_store(agent.deps.runtime)
    server = build_server(agent, caller=None, store=store)
    app = KeyAuth(server.streamable_http_app(host=host), store)
    config = uvicorn.Config(
        app, host=host, port=args.http, log_level=server.settings.log_level.lower()
    )
    note = "" if is_loopback(host) else "; reached from other hosts: put a TLS proxy in front"

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                said = f"serving MCP on http://{host}:{args.http}/mcp (API key per request)"
                print(f"loomgraph: {said}{note}", file=sys.stderr, flush=True)

    Server(config).run()
    return EXIT_OK


def build_server(
    agent: "Agent", *, caller: "Caller | None", store: "ServeStore | None" = None
) -> Any:
    """An MCP server (the SDK's `MCPServer`) whose tools run and resume `agent`'s runs as
    `caller` (stdio), or with `caller=None` as the caller `KeyAuth` authenticated for each
    HTTP request. Runs are read through `store` (default: the one beside the journal) with
    the caller's user id and the agent's name in the query."""
    from mcp.server.mcpserver import Context
    from mcp.server.mcpserver import MCPServer as SDKServer
    from mcp.server.mcpserver.exceptions import ToolError

    from loomgraph.agent.resume_answers import unanswered
    from loomgraph.cli.mcp_serve_callers import caller_of, checked_tool
    from loomgraph.cli.mcp_serve_errors import answered
    from loomgraph.serve.store import approvers_run, open_store

    runs = store or open_store(agent.deps.runtime)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        try:
            connect = getattr(agent.deps.runtime, "connect", None)
            if connect is not None:  # the journal's tables exist before the store reads them
                await connect()
            yield
        finally:
            await runs.close()
            await agent.aclose()  # stops the agent's own MCP servers, closes its journal

    async def own_run(who: "Caller", run_id: str) -> "RunRecord":
        record = await runs.run(run_id, who.user_id, agent=agent.name)
        if record is None:  # unknown, another user's, or another agent's: all alike
            raise ToolError(f"no run {run_id!r}")
        return record

    async def approvers_run_of(who: "Caller", run_id: str) -> "RunRecord":
        record = await approvers_run(runs, run_id, who.user_id, agent.name)
        if record is None:  # as `own_run`: another user's run that waits for no approval
            raise ToolError(f"no run {run_id!r}")
        return record

    async def run(prompt: str, ctx: Context, session_id: str | None = None) -> dict[str, Any]:
        """Run the agent on a prompt as the caller; returns its answer, status and run id.
        The run's events are sent as progress notifications."""
        who = caller_of(ctx, caller)
        stream = agent.stream(prompt, user_id=who.user_id, session_id=session_id)
        return await _follow(stream, ctx, lambda found: own_run(who, found))

    async def resume(
        run_id: str,
        ctx: Context,
        approve: bool | None = None,
        args: dict[str, Any] | None = None,
        key: str | None = None,
        value: Any = None,
    ) -> dict[str, Any]:
        """Go on with a stopped run of the caller's: approve (true) or deny (false) the call
        it waits for (approver role), optionally with edited arguments, or answer the
        question it asks with `value`; either names the request answered by its `key`
        (`awaiting_approval.key`, `awaiting_input.key`). With neither, resume a crashed
        run, or one whose approval request expired (the call is denied as timed out).
        Edited `args` go only with `approve` true: a denied call does not run."""
        who = caller_of(ctx, caller)
        # An approver's answer, or her sending a run on past an expired request, reaches any
        # user's run of this agent that waits for an approval, as over HTTP; anything else
        # reaches only the caller's own runs.
        going_on = approve is None and value is None and key is None and args is None
        answering = (approve is not None or going_on) and who.approver
        record = await (approvers_run_of(who, run_id) if answering else own_run(who, run_id))
        if going_on and record.user_id != who.user_id:
            unanswered(record)  # `AnswerNeeded` while a person may still answer
        options: dict[str, Any] = {}
        if approve is not None and value is not None:
            raise ToolError("give either approve (a call's answer) or value (a question's)")
        if args is not None and approve is not True:
            # Never dropped: the run would go on without the edit the client meant to make.
            said = (
                "without approve"
                if approve is None
                else "with approve false: a denied call does not run"
            )
            raise ToolError(
                f"args are the edited arguments of a call you approve: give them with approve "
                f"true and the request's key, not {said}"
            )
        if approve is not None:
            if not who.approver:
                raise ToolError(f"user {who.user_id!r} may not answer approvals (no approver role)")
        elif value is not None:
            options["value"] = _value(record, value, key or "")
        elif key is not None:
            raise ToolError("key names the request an answer settles: give approve or value")
        if approve is not None:
            options["approve"] = approval_answer(record, approve, args, key or "", who)
        stream = agent.resume_stream(run_id, **options)
        if record.user_id != who.user_id:  # another user's run: nothing of it is relayed
            return await answered_elsewhere(stream, runs, agent.name, run_id)
        return await _follow(stream, ctx, lambda found: own_run(who, found), run_id)

    async def approvals(ctx: Context, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        """The runs of every user waiting for an approver (approver role), newest first:
        each run's id, user, prompt and the call it waits for with the `key` to answer it
        with (`resume` with approve). `cursor`: the one the page before returned."""
        return await waiting_calls(runs, agent.name, caller_of(ctx, caller), limit, cursor)

    # Every error a tool raises is told to the client in one place (`answered`): a typed
    # one as `loomgraph serve` tells it (`ApprovalNotPending: ...`, `RunConflict: ...`).
    tools = [checked_tool(answered(fn)) for fn in (run, resume, approvals)]
    instructions = agent.instructions or None
    return SDKServer("loomgraph", instructions=instructions, lifespan=lifespan, tools=tools)


def _value(record: "RunRecord", value: Any, key: str) -> Any:
    """The caller's answer to the question `key` names (a `BoundValue`); a tool error when
    the run asks a keyed question and `key` is missing. The resume checks the value's type
    and the key under the run's lease (`resume_value`)."""
    from mcp.server.mcpserver.exceptions import ToolError

    from loomgraph.agent.answers import pending_of
    from loomgraph.engine.effects import BoundValue

    pending = pending_of(record)
    # Only a run journaled before requests had keys asks a question without one.
    if not key and pending is not None and pending.type and pending.key:
        raise ToolError(
            f"key is required with value: the awaiting_input.key of the question you answer "
            f"(run {record.run_id!r} asks {pending.key} at {pending.node!r}); without it a "
            "value could answer a later question nobody saw"
        )
    return BoundValue(value, key) if key else value


async def _follow(
    stream: AsyncIterator[Event],
    ctx: Any,
    record_of: "Callable[[str], Awaitable[RunRecord]]",
    run_id: str = "",
) -> dict[str, Any]:
    """Relay a run's events as progress notifications; the outcome as the tool's result.
    A stream that ends with no result (a resume of a finished run runs nothing) is
    `RunFinished` for a finished run, else a tool error naming the run's status, read by
    `record_of`."""
    from mcp.server.mcpserver.exceptions import ToolError

    from loomgraph.agent.result import RunResult
    from loomgraph.runtime.errors import RunFinished

    outcome: dict[str, Any] = {}
    count = 0
    async for event in stream:
        count += 1
        run_id = run_id or event.run_id
        await ctx.report_progress(count, None, _line(event))
        if event.kind == RUN_COMPLETED:
            outcome = event.payload.get("result") or {}
    if not outcome:
        if not run_id:
            raise ToolError("the run ended before it started: it has no id and no result")
        record = await record_of(run_id)
        if record.status.final:
            raise RunFinished(run_id, str(record.status))
        raise ToolError(f"run {run_id!r} stopped without a result; its status is {record.status}")

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
        summary["awaiting_approval"] = awaiting_approval_of(pending, pending.call)
    elif pending is not None and pending.type:
        summary["awaiting_input"] = {
            "node": pending.node,
            "message": pending.message,
            "type": pending.type,
            "schema": pending.schema,
            "key": pending.key,  # what `resume` must name with its `value`
        }
    return summary
