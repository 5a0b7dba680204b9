"""`loomgraph runs list|show|resume|fork|diff` and `render --run`: journaled runs from the shell."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from loomgraph.cli.output import (
    EXIT_FAILED,
    EXIT_OK,
    emit_event,
    print_diff,
    print_result,
    print_run,
    print_runs,
    usage,
)
from loomgraph.errors import GraphError, LoomgraphError
from loomgraph.governance.null import NoHooks
from loomgraph.protocols import (
    RunRecord,
    RunStatus,
    Runtime,
    Transition,
    UnknownRun,
    close_backend,
)
from loomgraph.runtime.errors import JournalError, RunConflict


class UsageError(LoomgraphError):
    """Bad input on the command line: an unknown run, seq, journal or graph (exit code 2)."""


# ------------------------------------------------------------------ parsers


def add_agent_options(parser: argparse.ArgumentParser, graph_default: str | None) -> None:
    """The options that make an Agent: graph, model, tools (as `loomgraph run` takes them)."""
    parser.add_argument(
        "--graph",
        default=graph_default,
        help="built-in graph name or YAML file"
        + ("" if graph_default else " (default: the run's graph)"),
    )
    parser.add_argument(
        "--model",
        default="echo",
        help="echo, claude-…, openai-compat:NAME, or MODULE:ATTR naming a "
        "Model object (or a function returning one)",
    )
    parser.add_argument(
        "--tools",
        nargs="*",
        default=[],
        metavar="MODULE:ATTR",
        help="tools to offer: functions, or lists of functions, by import path",
    )


def add_permissions_option(parser: argparse.ArgumentParser) -> None:
    """`--permissions FILE`: the rules a run is governed by (and pinned to)."""
    parser.add_argument(
        "--permissions",
        default=None,
        metavar="FILE",
        help="a permission file (YAML: mode, allow, ask, deny, per_user, sets); a run is "
        "resumed only under the permissions it started with",
    )


def add_runtime_option(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """`--runtime`: the journal, `sqlite:PATH` or `postgres://…`."""
    parser.add_argument(
        "--runtime",
        required=required,
        metavar="JOURNAL",
        help="the journal: sqlite:PATH or postgres://user@host/db",
    )


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
    show.add_argument("run_id")
    show.add_argument(
        "--graph", default=None, help="graph to rebuild the state with (default: the run's graph)"
    )
    resume = cmds.add_parser("resume", help="continue a crashed, failed or cancelled run")
    resume.add_argument("run_id")
    add_agent_options(resume, None)
    resume.add_argument(
        "--accept-graph-change",
        action="store_true",
        help="resume even though the graph changed since the run was made",
    )
    resume.add_argument(
        "--break-dead-lease",
        action="store_true",
        help="accepted for compatibility; a lease held by a dead worker process of this "
        "host is now always taken over at once",
    )
    retry = cmds.add_parser(
        "retry", help="resume a dead letter (or any run), its failed recoveries forgotten"
    )
    retry.add_argument("run_id")
    add_agent_options(retry, None)
    retry.add_argument(
        "--accept-graph-change",
        action="store_true",
        help="resume even though the graph changed since the run was made",
    )
    fork = cmds.add_parser("fork", help="start a new run from a checkpoint of another")
    fork.add_argument("run_id")
    fork.add_argument("--at", type=int, required=True, metavar="SEQ")
    fork.add_argument(
        "--patch",
        default=None,
        metavar="JSON",
        help='state patch applied with the reducers, e.g. \'{"input": "…"}\'',
    )
    add_agent_options(fork, None)
    diff = cmds.add_parser("diff", help="what changed in the state between two checkpoints")
    diff.add_argument("run_id")
    diff.add_argument("seq_a", type=int)
    diff.add_argument("seq_b", type=int)
    diff.add_argument("--graph", default=None)
    for cmd in (resume, retry, fork):
        add_permissions_option(cmd)
    for cmd in (listing, show, resume, retry, fork, diff):
        add_runtime_option(cmd, required=True)
        cmd.add_argument("--json", action="store_true", help="print JSON")
    return cmds


# ------------------------------------------------------------------ entry points


def handle(args: argparse.Namespace) -> int:
    """Run one `loomgraph runs …` command; returns the exit code."""
    command: Callable[[argparse.Namespace, Runtime], Awaitable[int]] = {
        "list": _list,
        "show": _show,
        "resume": _resume,
        "retry": _resume,
        "fork": _fork,
        "diff": _diff,
    }[args.runs_command]
    return journaled(args, command)


def render_run(args: argparse.Namespace) -> int:
    """`loomgraph render GRAPH --run RUN_ID --runtime …`: the diagram with the run's path."""
    if not args.runtime:
        return usage("render --run needs --runtime (sqlite:PATH or postgres://…)")
    return journaled(args, _render)


def journaled(
    args: argparse.Namespace, command: Callable[[argparse.Namespace, Runtime], Awaitable[int]]
) -> int:
    """Open the journal, run the command, close the journal; errors become exit codes."""

    async def go() -> int:
        runtime = open_journal(args.runtime)
        try:
            return await command(args, runtime)
        finally:
            await close_backend(runtime)

    try:
        return asyncio.run(go())
    except RunConflict as err:  # another worker is advancing the run: not ours to run now
        hint = (
            " (a live worker, or one on another host: if it crashed, its lease expires "
            "after lease_seconds; on its own host a dead worker's lease is taken over at once)"
            if err.owner
            else ""
        )
        print(f"loomgraph: {err}{hint}", file=sys.stderr)
        return EXIT_FAILED
    except (
        UsageError,
        UnknownRun,
        JournalError,
        GraphError,
        ValueError,
        ImportError,
        OSError,
    ) as err:  # GraphChanged is a GraphError
        return usage(str(err))


def open_journal(spec: str, *, create: bool = False) -> Runtime:
    """The journal a `--runtime` names; unless `create`, an SQLite file must exist already."""
    from loomgraph.agent.deps import resolve_runtime

    if spec.startswith("sqlite:") and not create:
        path = spec.removeprefix("sqlite:")
        if path != ":memory:" and not Path(path).is_file():
            # Opening would create an empty journal; a typo should not look like "no runs".
            raise UsageError(f"no journal at {path!r}")
    elif spec == "memory":
        raise UsageError(
            "--runtime memory keeps nothing between commands; use sqlite:PATH or postgres://…"
        )
    return resolve_runtime(spec)


def _imported(path: str) -> Any:
    """The object at `module:attr` (attr may be dotted), or the module for `module`."""
    import importlib

    module_name, _, attr = path.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        target = getattr(target, part)
    return target


def load_model(spec: str) -> Any:
    """`--model`: a name the Agent resolves, or `MODULE:ATTR` naming a Model or a factory."""
    if spec == "echo" or spec.startswith(("claude-", "openai-compat:")) or ":" not in spec:
        return spec
    target = _imported(spec)
    return target if hasattr(target, "stream") else target()


def load_tools(paths: Sequence[str]) -> list[Any]:
    """Tools by import path (`module:function`, or `module:LIST` of functions)."""
    tools: list[Any] = []
    for path in paths:
        found = _imported(path)
        tools.extend(found if isinstance(found, list | tuple) else [found])
    return tools


# ------------------------------------------------------------------ reading


async def load_record(runtime: Runtime, run_id: str) -> tuple[RunRecord, list[Transition]]:
    record = await runtime.load_run(run_id)
    if record is None:
        raise UsageError(f"unknown run {run_id!r}")
    return record, await runtime.transitions(run_id)


def _compiled(graph: str | None, record: RunRecord) -> Any:
    """The compiled graph to rebuild a run's state with (the run's own by default)."""
    from loomgraph.authoring.library import load_graph
    from loomgraph.graph.compiled import compile_graph

    compiled = compile_graph(load_graph(graph or record.graph_name))
    if compiled.hash != record.graph_hash:
        print(
            f"loomgraph: warning: run {record.run_id} was made with graph "
            f"{record.graph_name!r} version {record.graph_hash}; rebuilding its state with "
            f"version {compiled.hash}",
            file=sys.stderr,
        )
    return compiled


async def _list(args: argparse.Namespace, runtime: Runtime) -> int:
    runs = await runtime.runs(args.user)
    if args.status is not None:
        runs = [r for r in runs if r.status == args.status]
    print_runs(runs, args.json)
    return EXIT_OK


async def _show(args: argparse.Namespace, runtime: Runtime) -> int:
    from loomgraph.agent.checkpoints import position

    record, transitions = await load_record(runtime, args.run_id)
    effects = await runtime.effects(args.run_id)
    state = position(_compiled(args.graph, record), record, transitions).state
    print_run(record, transitions, effects, state, args.json)
    return EXIT_OK


async def _diff(args: argparse.Namespace, runtime: Runtime) -> int:
    from loomgraph.agent.checkpoints import diff, position

    record, transitions = await load_record(runtime, args.run_id)
    last = max((t.seq for t in transitions), default=0)
    for seq in (args.seq_a, args.seq_b):
        if not 0 <= seq <= last:
            raise UsageError(
                f"run {args.run_id} has no checkpoint {seq}; it has 0..{last} "
                "(0 is the first state)"
            )
    compiled = _compiled(args.graph, record)
    before = position(compiled, record, transitions, upto=args.seq_a).state
    after = position(compiled, record, transitions, upto=args.seq_b).state
    print_diff(diff(before, after), args.seq_a, args.seq_b, args.json)
    return EXIT_OK


# ------------------------------------------------------------------ running


def agent_for(
    args: argparse.Namespace, runtime: Runtime, record: RunRecord, permissions: Any = None
) -> Any:
    """An Agent for resuming or forking `record`: its graph unless --graph, the given tools
    and permissions (a run resumes only under the policy it is pinned to)."""
    from loomgraph.agent.agent import Agent

    return Agent(
        "",
        model=load_model(args.model),
        tools=load_tools(args.tools),
        runtime=runtime,
        architecture=args.graph or record.graph_name,
        hooks=_Printer(args.json),
        permissions=permissions,
    )


def load_permissions(path: str | None) -> Any:
    """The permissions of `--permissions FILE`, or None for the defaults."""
    if path is None:
        return None
    from loomgraph.governance.permissions import StandardPermissions

    return StandardPermissions.from_file(path)


class _Printer(NoHooks):
    """Hooks that print each event of the run, as `loomgraph run` does."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    async def on_event(self, event: Any) -> None:
        """Print the event."""
        emit_event(event, self.as_json)


async def _resume(args: argparse.Namespace, runtime: Runtime) -> int:
    record, _ = await load_record(runtime, args.run_id)
    agent = agent_for(args, runtime, record, load_permissions(args.permissions))
    go_on = agent.retry if args.runs_command == "retry" else agent.resume
    result = await go_on(args.run_id, accept_graph_change=args.accept_graph_change)
    return print_result(result, args.json)


async def _fork(args: argparse.Namespace, runtime: Runtime) -> int:
    record, _ = await load_record(runtime, args.run_id)
    patch = None
    if args.patch is not None:
        try:
            patch = json.loads(args.patch)
        except json.JSONDecodeError as err:
            raise UsageError(f"--patch is not JSON: {err}") from None
        if not isinstance(patch, dict):
            raise UsageError("--patch must be a JSON object of state fields")
    agent = agent_for(args, runtime, record, load_permissions(args.permissions))
    result = await agent.fork(args.run_id, at=args.at, patch=patch)
    return print_result(result, args.json)


async def _render(args: argparse.Namespace, runtime: Runtime) -> int:
    from loomgraph.authoring.library import load_graph
    from loomgraph.authoring.render import RunOverlay, render

    record, transitions = await load_record(runtime, args.run)
    graph = load_graph(args.graph)
    if graph.name != record.graph_name:
        raise UsageError(
            f"run {record.run_id} was made with graph {record.graph_name!r}, not {graph.name!r}"
        )
    overlay = RunOverlay.from_record(record, transitions)
    render(graph, Path(args.output), run=overlay, expand=getattr(args, "expand", False))
    print(
        f"wrote {args.output} (run {record.run_id}, status {record.status}, "
        f"{len(transitions)} transitions)"
    )
    return EXIT_OK
