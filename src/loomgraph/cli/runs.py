"""`loomgraph runs list|show|resume|retry|send-on-expired|fork|diff` and `render --run`:
journaled runs from the shell."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from loomgraph.cli import agent_args, going_on, journal
from loomgraph.cli.answer_commands import named_request, say_how_to_go_on
from loomgraph.cli.console import can_ask, say
from loomgraph.cli.expired_runs import send_on_expired
from loomgraph.cli.output import (
    EXIT_OK,
    DrivenRun,
    exit_code,
    print_diff,
    print_queued_run,
    print_result,
    print_run,
    print_runs,
    usage,
)
from loomgraph.cli.run import add_no_input_option
from loomgraph.engine.effects import BoundValue
from loomgraph.protocols import (
    RunRecord,
    RunStatus,
    Runtime,
)

# ------------------------------------------------------------------ parsers


def add_runs_parser(sub: Any) -> Any:
    """Add `runs` and its subcommands to the `loomgraph` subparsers; the subcommands' group,
    for other modules to add theirs."""
    runs = sub.add_parser("runs", help="list, show, resume, fork and diff journaled runs")
    cmds = runs.add_subparsers(dest="runs_command", required=True)

    listing = cmds.add_parser("list", help="the runs: status, user, graph, created")
    listing.add_argument("--user", default=None, help="only this user's runs")
    listing.add_argument(
        "--status",
        default=None,
        choices=[str(s) for s in RunStatus],
        help="only runs with this status (dead_letter: runs given up after failed recoveries)",
    )
    show = cmds.add_parser("show", help="a run's transitions, final state and result")
    show.add_argument("run_id", help="the run (see `runs list`)")
    show.add_argument(
        "--graph",
        default=None,
        help="graph to rebuild the state with (default: the run's graph); another graph than "
        "the run's is refused unless --any-graph",
    )
    resume = cmds.add_parser(
        "resume", help="continue a crashed, failed, cancelled or interrupted run"
    )
    resume.add_argument("run_id", help="the run to continue")
    resume.add_argument(
        "--value",
        default=None,
        metavar="JSON",
        help="answer the interrupt the run waits at: a JSON value (3, true, '[\"a\"]', "
        "'{\"approved\": true}'); text that is not JSON is taken as a string (quote text "
        "that reads as JSON: '\"42\"'). Checked against the type the node asked for",
    )
    resume.add_argument(
        "--request",
        default="",
        metavar="KEY",
        help="with --value, required: the question answered (its `pending` key, printed when "
        "the run stopped): answer it or nothing, never a later question",
    )
    agent_args.add_agent_options(resume, None, graph=False)
    resume.add_argument(
        "--break-dead-lease",
        action="store_true",
        help="accepted for compatibility; a lease held by a dead worker process of this "
        "host is now always taken over at once",
    )
    retry = cmds.add_parser(
        "retry", help="resume a dead letter (or any run), its failed recoveries forgotten"
    )
    retry.add_argument("run_id", help="the run to retry")
    agent_args.add_agent_options(retry, None, graph=False)
    expired = cmds.add_parser(
        "send-on-expired",
        help="go on with every run whose approval request passed its deadline, the call "
        "denied as timed out (a server or fleet does it by itself; run this from cron)",
    )
    expired.add_argument("--user", default=None, help="only this user's runs")
    agent_args.add_agent_options(expired, None, graph=False)
    for cmd in (resume, retry, expired):
        going_on.add_graph_option(cmd)
        add_no_input_option(cmd)
    fork = cmds.add_parser("fork", help="start a new run from a checkpoint of another")
    fork.add_argument("run_id", help="the run to fork")
    fork.add_argument(
        "--at",
        type=int,
        required=True,
        metavar="SEQ",
        help="the checkpoint to start from (a transition's seq; 0 is the first state)",
    )
    fork.add_argument(
        "--patch",
        default=None,
        metavar="JSON",
        help="state patch applied with the reducers (messages are appended to), e.g. "
        '\'{"messages": [{"role": "user", "content": "…"}]}\'',
    )
    agent_args.add_agent_options(fork, None)
    diff = cmds.add_parser("diff", help="what changed in the state between two checkpoints")
    diff.add_argument("run_id", help="the run")
    diff.add_argument("seq_a", type=int, help="the earlier checkpoint (0 is the first state)")
    diff.add_argument("seq_b", type=int, help="the later checkpoint")
    diff.add_argument(
        "--graph",
        default=None,
        help="graph to rebuild the states with (default: the run's); another graph than the "
        "run's is refused unless --any-graph",
    )
    for cmd in (show, diff):
        cmd.add_argument(
            "--any-graph",
            action="store_true",
            help="with --graph: rebuild the state with it even when it is not the graph (or "
            "version) the run was made with, whose fields it may not have",
        )
    for cmd in (resume, retry, expired, fork):
        agent_args.add_permissions_option(cmd)
    for cmd in (listing, show, diff):
        agent_args.add_agent_file_option(cmd)
    for cmd in (listing, show, resume, retry, expired, fork, diff):
        agent_args.add_runtime_option(cmd, required=True)
        going_on_a_run = cmd in (resume, retry, expired, fork)
        help_ = going_on.JSON_HELP if going_on_a_run else "print JSON Lines"
        cmd.add_argument("--json", action="store_true", help=help_)
    return cmds


# ------------------------------------------------------------------ entry points


def handle(args: argparse.Namespace, driven: DrivenRun) -> int:
    """Run one `loomgraph runs …` command (the run `resume`, `retry` or `fork` goes on with
    followed in `driven`, for the line Ctrl-C prints); returns the exit code."""
    commands: dict[str, Callable[[argparse.Namespace, Runtime], Awaitable[int]]] = {
        "list": _list,
        "show": _show,
        "resume": functools.partial(_resume, driven=driven),
        "retry": functools.partial(_resume, driven=driven),
        "send-on-expired": functools.partial(
            send_on_expired, resume=functools.partial(_resume, driven=driven)
        ),
        "fork": functools.partial(_fork, driven=driven),
        "diff": _diff,
    }
    return journal.journaled(args, commands[args.runs_command])


def render_run(args: argparse.Namespace) -> int:
    """`loomgraph render GRAPH --run RUN_ID --runtime …`: the diagram with the run's path."""
    if not agent_args.runtime_of(args):
        return usage("render --run needs --runtime (sqlite:PATH or postgres://…) or --agent FILE")
    return journal.journaled(args, _render)


# ------------------------------------------------------------------ reading


async def _compiled(runtime: Runtime, args: argparse.Namespace, record: RunRecord) -> Any:
    """The compiled graph to rebuild a run's state with: `--graph` when given, else the one
    the run started with as the journal keeps it (else its graph by name, as it reads now,
    with a warning when that is another version). A `--graph` that is not the graph the run
    was made with (another name or version) would rebuild the state with other fields: a
    UsageError naming both, unless `--any-graph` asks for it (then a warning)."""
    from loomgraph.agent.pinning import compile_pinned, graph_key
    from loomgraph.authoring.library import load_graph
    from loomgraph.graph.compiled import compile_graph

    graph: str | None = args.graph
    kept = await runtime.graph(record.graph_hash)
    if graph is None and kept is not None:
        return compile_pinned(kept)
    compiled = compile_graph(load_graph(graph or record.graph_name))
    key = graph_key(compiled)
    if key == record.graph_hash:
        return compiled
    run = f"run {record.run_id} was made with graph {record.graph_name!r} ({record.graph_hash})"
    if graph is not None and not args.any_graph:
        own = (
            "leave --graph out to show it with its own graph, as the journal keeps it"
            if kept is not None
            else "the journal does not keep the run's own graph: pass the file it was made "
            "with as --graph (or leave --graph out for the built-in graph of its name)"
        )
        raise journal.UsageError(
            f"{run}; --graph {graph} is graph {compiled.name!r} ({key}), whose state fields "
            f"may differ: {own}; add --any-graph to rebuild its state with this graph anyway"
        )
    print(
        f"loomgraph: warning: {run}; rebuilding its state with graph {compiled.name!r} ({key})",
        file=sys.stderr,
    )
    return compiled


async def _list(args: argparse.Namespace, runtime: Runtime) -> int:
    status = None if args.status is None else RunStatus(args.status)
    print_runs(await runtime.runs(args.user, status=status), args.json)
    return EXIT_OK


async def _show(args: argparse.Namespace, runtime: Runtime) -> int:
    from loomgraph.agent.checkpoints import position
    from loomgraph.agent.fleet import fleet_run_of

    record, transitions = await journal.load_record(runtime, args.run_id)
    effects = await runtime.effects(args.run_id)
    if record.status == RunStatus.QUEUED and record.initial is None:
        # Submitted, never started: its prompt is in its queued job, not in the journal, and
        # it has no first state to rebuild (a queued fork has one: it is shown as any run).
        found = await fleet_run_of(runtime, record.run_id)
        print_queued_run(record, found.job_id if found is not None else None, args.json)
        return EXIT_OK
    state = position(await _compiled(runtime, args, record), record, transitions).state
    print_run(record, transitions, effects, state, args.json)
    return EXIT_OK


async def _diff(args: argparse.Namespace, runtime: Runtime) -> int:
    from loomgraph.agent.checkpoints import diff, position

    record, transitions = await journal.load_record(runtime, args.run_id)
    last = max((t.seq for t in transitions), default=0)
    for seq in (args.seq_a, args.seq_b):
        if not 0 <= seq <= last:
            raise journal.UsageError(
                f"run {args.run_id} has no checkpoint {seq}; it has 0..{last} "
                "(0 is the first state)"
            )
    compiled = await _compiled(runtime, args, record)
    before = position(compiled, record, transitions, upto=args.seq_a).state
    after = position(compiled, record, transitions, upto=args.seq_b).state
    print_diff(diff(before, after), args.seq_a, args.seq_b, args.json)
    return EXIT_OK


# ------------------------------------------------------------------ running


async def _resume(args: argparse.Namespace, runtime: Runtime, driven: DrivenRun) -> int:
    record, _ = await journal.load_record(runtime, args.run_id)
    graph = await going_on.run_graph(args, runtime, record, args.graph_choice)
    permissions = agent_args.load_permissions(args.permissions)
    asking = can_ask(args)
    approver = None
    if asking:  # an ask on the way is put to the person here; unanswered, the run waits
        from loomgraph.cli.asking import TerminalApprover

        approver = TerminalApprover(can_wait=True)
    agent = going_on.agent_for(args, runtime, record, graph.architecture, permissions, approver)
    request = getattr(args, "request", "")  # `retry` answers nothing
    if request and args.value is None:
        raise journal.UsageError("--request names the question --value answers: give --value")
    # The run's events, followed on their way to the agent's hooks (which print them).
    sink = driven.sink(agent.deps.hooks.on_event)
    driven.going_on(args.run_id)
    if args.runs_command == "retry":
        # A retried run that stops at a question waits, as any run does: the command
        # printed below (`runs resume … --value JSON --request KEY`) answers it.
        result = await agent.resumer().retry(sink, args.run_id, graph=graph.choice)
    elif args.value is None:
        result = await agent.resumer().resume(sink, args.run_id, graph=graph.choice)
    else:  # checked against the type asked for as `Agent.resume` checks it: ResumeError
        from loomgraph.cli.asking import value_of

        value = value_of(args.value)
        request = named_request(record, args, args.runtime, ("resume", args.run_id))
        answer = BoundValue(value, request) if request else value
        result = await agent.resumer().resume(sink, args.run_id, graph=graph.choice, value=answer)
    print_result(result, args.json)
    ended: Any = result.to_dict()
    if asking:  # its questions asked here, each answer going on with the run
        from loomgraph.cli.asking import answer_questions

        async def go_on(answer: Any) -> Any:
            going = await agent.resumer().resume(
                sink, args.run_id, graph=graph.choice, value=answer
            )
            print_result(going, args.json)
            return going.to_dict()

        ended = await answer_questions(ended, runtime, go_on)
    say_how_to_go_on(ended, args, args.runtime)
    return exit_code(str(ended["status"]))


async def _fork(args: argparse.Namespace, runtime: Runtime, driven: DrivenRun) -> int:
    record, transitions = await journal.load_record(runtime, args.run_id)
    if args.at != 0 and not any(t.seq == args.at for t in transitions):
        last = max((t.seq for t in transitions), default=0)
        raise journal.UsageError(
            f"run {args.run_id} has no checkpoint {args.at}; it has 0..{last} "
            "(0 is the first state)"
        )
    patch = None
    if args.patch is not None:
        try:
            patch = json.loads(args.patch)
        except json.JSONDecodeError as err:
            raise journal.UsageError(f"--patch is not JSON: {err}") from None
        if not isinstance(patch, dict):
            raise journal.UsageError("--patch must be a JSON object of state fields")
    # The new run goes on with --graph, else the agent file's graph, else the run's own.
    wanted = args.graph or (going_on.CURRENT if args.agent else going_on.PINNED)
    graph = await going_on.run_graph(args, runtime, record, wanted)
    permissions = agent_args.load_permissions(args.permissions)
    agent = going_on.agent_for(args, runtime, record, graph.architecture, permissions)
    # The new run's id comes with its `run_started`: `--json` prints nothing else of it.
    sink = driven.sink(agent.deps.hooks.on_event)
    result = await agent.resumer().fork(sink, args.run_id, at=args.at, patch=patch)
    code = print_result(result, args.json)
    say_how_to_go_on(result.to_dict(), args, args.runtime)  # a new run: answered by its id
    return code


async def _render(args: argparse.Namespace, runtime: Runtime) -> int:
    from loomgraph.authoring.render import RunOverlay, render

    record, transitions = await journal.load_record(runtime, args.run)
    graph = await _graph_to_draw(args, runtime, record)
    overlay = RunOverlay.from_record(record, transitions)
    render(graph, Path(args.output), run=overlay, expand=getattr(args, "expand", False))
    say(
        f"wrote {args.output} (run {record.run_id}, status {record.status}, "
        f"{len(transitions)} transitions)",
        "green",
    )
    return EXIT_OK


async def _graph_to_draw(args: argparse.Namespace, runtime: Runtime, record: RunRecord) -> Any:
    """The graph `render --run` draws: GRAPH when given (with a warning when it is not the
    version the run was made with), else the run's own, as the journal kept it (else the
    agent file's graph, else the run's graph by name, as they read now)."""
    from loomgraph.agent.pinning import compile_pinned, graph_key
    from loomgraph.authoring.library import load_graph
    from loomgraph.errors import GraphError
    from loomgraph.graph.compiled import compile_graph

    given = getattr(args, "graph", None)
    if not given:
        kept = await runtime.graph(record.graph_hash)
        if kept is not None:
            return compile_pinned(kept).graph
    graph = load_graph(agent_args.graph_of(args, record.graph_name))
    if graph.name != record.graph_name:
        raise journal.UsageError(
            f"run {record.run_id} was made with graph {record.graph_name!r}, not {graph.name!r}"
        )
    try:
        key: str | None = graph_key(compile_graph(graph))
    except GraphError:
        key = None  # it does not compile: not the version the run was made with either
    if key != record.graph_hash:
        what = given or f"graph {graph.name!r} as it reads now"
        why = (
            "leave GRAPH out to draw the run's own version"
            if given
            else "the journal does not keep the run's own version"
        )
        print(
            f"loomgraph: warning: {what} is not the version of graph {record.graph_name!r} "
            f"run {record.run_id} was made with ({record.graph_hash}; this is "
            f"{key or 'invalid'}); drawing it anyway: {why}",
            file=sys.stderr,
        )
    return graph
