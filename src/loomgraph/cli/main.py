"""The `loomgraph` command: run, validate, render, schema, graphs, runs, audit."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from loomgraph.cli import approvals as cli_approvals
from loomgraph.cli import audit as cli_audit
from loomgraph.cli import runs as cli_runs
from loomgraph.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, emit_event


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loomgraph", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an agent on a prompt and stream its events")
    run.add_argument("prompt")
    run.add_argument("--graph", default="react", help="built-in graph name or YAML file")
    run.add_argument(
        "--model",
        default="echo",
        help="echo, claude-…, openai-compat:NAME, "
        "or MODULE:ATTR naming a Model object (or a function returning one)",
    )
    run.add_argument(
        "--tools",
        nargs="*",
        default=[],
        metavar="MODULE:ATTR",
        help="tools to offer: functions, or lists of functions, by import path",
    )
    run.add_argument("--instructions", default="You are a helpful assistant.")
    run.add_argument("--user", default=None)
    run.add_argument("--session", default=None)
    run.add_argument("--json", action="store_true", help="print events as JSON lines")
    cli_runs.add_runtime_option(run, required=False)
    cli_runs.add_permissions_option(run)
    run.add_argument(
        "--approve",
        action="store_true",
        help="ask on this terminal when a rule says ask (without it: with --runtime the run "
        "stops to wait for `loomgraph runs approve`, else ask means deny)",
    )
    validate = sub.add_parser("validate", help="check graph files; print every problem")
    validate.add_argument("files", nargs="+")
    render = sub.add_parser("render", help="draw a graph: .svg, .dot or .mmd (Mermaid)")
    render.add_argument("graph", help="built-in graph name or YAML file")
    render.add_argument("-o", "--output", required=True)
    render.add_argument(
        "--run",
        default=None,
        metavar="RUN_ID",
        help="draw this run's path, visit counts and where it stopped",
    )
    render.add_argument(
        "--expand", action="store_true", help="draw the graphs map/subgraph nodes run, inline"
    )
    cli_runs.add_runtime_option(render, required=False)
    sub.add_parser("schema", help="print the JSON Schema of graph files")
    sub.add_parser("graphs", help="list the built-in graphs")
    new_graph = sub.add_parser("new-graph", help="write a commented starting graph, NAME.yaml")
    new_graph.add_argument("name", help="the graph's name: letters, digits, - and _")
    new_graph.add_argument("-o", "--output-dir", default=".", help="folder to write it in")
    cli_approvals.add_parsers(cli_runs.add_runs_parser(sub))
    cli_audit.add_audit_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `loomgraph` command; returns the exit code."""
    args = _parser().parse_args(argv)
    from loomgraph.errors import GraphError
    from loomgraph.observability.audit_chain import AuditLogError
    from loomgraph.runtime.errors import JournalError

    try:
        if args.command == "run":
            return asyncio.run(_run(args))
        if args.command == "validate":
            return _validate(args.files)
        if args.command == "runs":
            if args.runs_command in cli_approvals.COMMANDS:
                return cli_approvals.handle(args)
            return cli_runs.handle(args)
        if args.command == "audit":
            return cli_audit.handle(args)
        if args.command == "render":
            if args.run is not None:
                return cli_runs.render_run(args)
            return _render(args.graph, args.output, expand=args.expand)
        if args.command == "new-graph":
            from loomgraph.authoring.scaffold import write_new_graph

            print(f"wrote {write_new_graph(args.name, Path(args.output_dir))}")
            return EXIT_OK
        if args.command == "schema":
            from loomgraph.authoring.schema import graph_json_schema

            print(json.dumps(graph_json_schema(), indent=2))
            return EXIT_OK
        from loomgraph.authoring.library import builtin_names

        print("\n".join(builtin_names()))
        return EXIT_OK
    except (
        GraphError,
        JournalError,
        AuditLogError,
        ValueError,
        ImportError,
        OSError,
        cli_runs.UsageError,
    ) as err:
        print(f"loomgraph: {err}", file=sys.stderr)
        return EXIT_USAGE


async def _run(args: argparse.Namespace) -> int:
    from loomgraph.agent.agent import Agent

    runtime = cli_runs.open_journal(args.runtime, create=True) if args.runtime else None
    agent = Agent(
        args.instructions,
        model=cli_runs.load_model(args.model),
        tools=cli_runs.load_tools(args.tools),
        architecture=args.graph,
        runtime=runtime,
        permissions=cli_runs.load_permissions(args.permissions),
        approval_handler=cli_approvals.approver_for(args),
    )
    status = "failed"
    try:
        async for event in agent.stream(args.prompt, user_id=args.user, session_id=args.session):
            emit_event(event, args.json)
            if event.kind == "run_completed":
                status = event.payload["status"]
    finally:
        await agent.aclose()
    return EXIT_OK if status == "completed" else EXIT_FAILED


def _validate(files: Sequence[str]) -> int:
    from loomgraph.authoring.loader import load_graph_file
    from loomgraph.errors import GraphValidationError

    failed = False
    for file in files:
        try:
            load_graph_file(file)
        except GraphValidationError as err:
            failed = True
            for problem in err.problems:
                print(problem)
        else:
            print(f"{file}: ok")
    return EXIT_FAILED if failed else EXIT_OK


def _render(graph: str, output: str, *, expand: bool = False) -> int:
    from loomgraph.authoring.library import load_graph
    from loomgraph.authoring.render import render

    render(load_graph(graph), Path(output), expand=expand)
    print(f"wrote {output}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
