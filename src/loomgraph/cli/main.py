"""loomgraph: run agents, check and draw their graphs, inspect and resume journaled runs."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO, cast

from loomgraph.cli import agent_args, journal
from loomgraph.cli import approvals as cli_approvals
from loomgraph.cli import audit as cli_audit
from loomgraph.cli import evaluate as cli_evaluate
from loomgraph.cli import fleet as cli_fleet
from loomgraph.cli import mcp_serve as cli_mcp_serve
from loomgraph.cli import run as cli_run
from loomgraph.cli import runs as cli_runs
from loomgraph.cli import serve as cli_serve
from loomgraph.cli.answer_commands import resume_command, unkept
from loomgraph.cli.console import say, warn
from loomgraph.cli.output import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PIPE_CLOSED,
    EXIT_USAGE,
    DrivenRun,
    usage,
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("loomgraph")
    except PackageNotFoundError:
        return "unknown"


class _VersionAction(argparse.Action):
    """`--version`: print the version and exit (the metadata is read only then)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kw: Any) -> None:
        print(f"loomgraph {_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The `loomgraph` argument parser (every argument has help text; a test walks it)."""
    parser = argparse.ArgumentParser(
        prog="loomgraph",
        description=__doc__,
        epilog="exit codes: 0 ok, 1 run or check failed, 2 bad usage, 3 awaiting approval "
        "(or an interrupt's answer), 4 budget exhausted, 75 another process drives the run "
        "(try again later), 130 stopped by Ctrl-C, 141 stdout closed by its reader. "
        "--json prints JSON Lines. Docs: docs/cli.md",
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli_run.add_run_parser(sub)
    validate = sub.add_parser("validate", help="check graph and agent files; print every problem")
    validate.add_argument("files", nargs="*", metavar="FILE", help="graph or agent files (YAML)")
    agent_args.add_agent_file_option(validate)
    render = sub.add_parser("render", help="draw a graph: .svg, .png, .pdf, .dot or .mmd (Mermaid)")
    render.add_argument(
        "graph",
        nargs="?",
        default=None,
        help="built-in graph name or YAML file (default: the --agent file's graph)",
    )
    agent_args.add_agent_file_option(render)
    render.add_argument(
        "-o", "--output", required=True, help="the file to write; its suffix picks the format"
    )
    render.add_argument(
        "--run",
        default=None,
        metavar="RUN_ID",
        help="draw this run's path, visit counts and where it stopped",
    )
    render.add_argument(
        "--expand", action="store_true", help="draw the graphs map/subgraph nodes run, inline"
    )
    agent_args.add_runtime_option(render, required=False)
    schema = sub.add_parser("schema", help="print the JSON Schema of graph (or agent) files")
    schema.add_argument(
        "--agent", action="store_true", help="the schema of agent files instead of graph files"
    )
    graphs = sub.add_parser("graphs", help="list the built-in graphs")
    graphs.add_argument("--json", action="store_true", help='one {"name": ...} per line')
    new_graph = sub.add_parser("new-graph", help="write a commented starting graph, NAME.yaml")
    new_graph.add_argument("name", help="the graph's name: letters, digits, - and _")
    new_graph.add_argument("-o", "--output-dir", default=".", help="folder to write it in")
    runs_commands = cli_runs.add_runs_parser(sub)
    cli_approvals.add_parsers(runs_commands)
    cli_fleet.add_runs_parsers(runs_commands)
    _also_dash_a(runs_commands.choices["cancel"])
    cli_audit.add_audit_parser(sub)
    cli_evaluate.add_parser(sub)
    cli_serve.add_parser(sub)
    cli_fleet.add_parser(sub)
    cli_mcp_serve.add_parser(sub)
    return parser


def _also_dash_a(parser: argparse.ArgumentParser) -> None:
    """`-a` for a subcommand's `--agent`, as every other `runs` subcommand spells it."""
    action = parser._option_string_actions["--agent"]
    action.option_strings = [*action.option_strings, "-a"]  # usage and errors name --agent
    parser._option_string_actions["-a"] = action


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `loomgraph` command; returns the exit code."""
    stdout = sys.stdout
    if stdout is None:  # started with stdout closed (`>&-`): file descriptor 1 is free
        # Its output would go nowhere, and the next file opened (a journal, an MCP server's
        # pipe) would take descriptor 1 and receive whatever child processes print.
        if sys.stderr is not None:
            warn(
                "standard output is closed: nothing was done (to discard the output, "
                "redirect it to the null device: `>/dev/null`)"
            )
        return EXIT_USAGE
    sys.stdout = cast(TextIO, _Stdout(stdout))
    args: argparse.Namespace | None = None
    driven = DrivenRun()
    try:
        args = build_parser().parse_args(argv)
        driven.given_runtime = getattr(args, "runtime", None)  # before `run` resolves it
        code = _dispatch(args, driven)
        sys.stdout.flush()  # a reader gone shows here, not as an error at exit
        return code
    except KeyboardInterrupt:
        _say_stopped(args, driven)
        return EXIT_INTERRUPTED
    finally:
        sys.stdout = stdout


def _say_stopped(args: argparse.Namespace | None, driven: DrivenRun) -> None:
    """After Ctrl-C, on stderr: how to go on with the run the command drove (`run`, `runs
    resume | retry | fork | approve | deny`), one mechanism for all: the resume command
    while the run is left unfinished, that it cannot be resumed without a journal that
    keeps it, or how it had stopped already; else that the command was interrupted."""
    run_id = driven.run_id
    if args is None or run_id is None:
        starting = args is not None and args.command == "run"
        warn("stopped before the run started" if starting else "interrupted", style="yellow")
        return
    if not driven.unfinished:
        warn(f"stopped; run {run_id} had stopped already ({driven.status})", "yellow")
        return
    runtime = agent_args.runtime_of(args)
    if journal.keeps_runs(runtime):
        warn(
            f"stopped; resume with: {resume_command(run_id, args, driven.given_runtime)}", "yellow"
        )
    else:
        warn(f"stopped run {run_id}; it {unkept(runtime)}, so it cannot be resumed")


class _Stdout:
    """sys.stdout while `main` runs: a write or flush to a closed pipe ends the process
    (`_reader_gone`), wherever the command prints from; all else is the stream's own."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        """Write, or end the process when the reader is gone."""
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            _reader_gone()

    def flush(self) -> None:
        """Flush, or end the process when the reader is gone."""
        try:
            self._stream.flush()
        except BrokenPipeError:
            _reader_gone()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _reader_gone() -> NoReturn:
    """Stdout's reader closed it (`| head -1`): it wanted no more. The command ends at once,
    quietly, as SIGPIPE kills other programs (docs/cli.md): a closed pipe is no decision to
    cancel, so a run it drove stays journaled as it was (running: `runs resume` goes on),
    not cancelled by an unwinding that would journal it so. `os._exit`: no cleanup may run,
    nor a flush of stdout that would fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.flush()
    os._exit(EXIT_PIPE_CLOSED)


def _dispatch(args: argparse.Namespace, driven: DrivenRun) -> int:
    from loomgraph.authoring.agent_file import AgentFileError
    from loomgraph.errors import GraphError, LoomgraphError
    from loomgraph.memory.errors import MemoryBackendError
    from loomgraph.observability.audit_chain import AuditLogError
    from loomgraph.runtime.errors import JournalError

    try:
        if args.command == "run":
            return cli_run.handle(args, driven)
        if args.command == "validate":
            return _validate(args)
        if args.command == "runs":
            if args.runs_command in cli_approvals.COMMANDS:
                return cli_approvals.handle(args, driven)
            if args.runs_command in cli_fleet.COMMANDS:
                return cli_fleet.handle_runs(args)
            return cli_runs.handle(args, driven)
        if args.command == "audit":
            return cli_audit.handle(args)
        if args.command == "eval":
            return cli_evaluate.handle(args)
        if args.command in ("serve", "keys"):
            return cli_serve.handle(args)
        if args.command == "worker":
            return cli_fleet.handle(args)
        if args.command == "mcp-serve":
            return cli_mcp_serve.handle(args)
        if args.command == "render":
            if args.run is not None:
                return cli_runs.render_run(args)
            return _render(args)
        if args.command == "new-graph":
            from loomgraph.authoring.scaffold import write_new_graph

            say(f"wrote {write_new_graph(args.name, Path(args.output_dir))}")
            return EXIT_OK
        if args.command == "schema":
            return _schema(args.agent)
        from loomgraph.authoring.library import builtin_names

        for name in builtin_names():
            print(json.dumps({"name": name}) if args.json else name)
        return EXIT_OK
    except AgentFileError as err:
        for problem in err.problems:
            warn(str(problem), style="red")
        return EXIT_USAGE
    except (
        GraphError,
        JournalError,
        MemoryBackendError,  # memory it cannot open or read, as a journal
        AuditLogError,
        ValueError,
        ImportError,
        OSError,
        journal.UsageError,
    ) as err:
        return usage(str(err))
    except LoomgraphError as err:
        # An MCP server that cannot start (its URL's credentials masked); the class is
        # imported only now: a command without MCP servers never loads the client.
        from loomgraph.tools.mcp import MCPServerError

        if not isinstance(err, MCPServerError):
            raise
        return usage(str(err))


def _schema(agent: bool) -> int:
    if agent:
        from loomgraph.authoring.agent_file import agent_json_schema

        print(json.dumps(agent_json_schema(), indent=2))
    else:
        from loomgraph.authoring.schema import graph_json_schema

        print(json.dumps(graph_json_schema(), indent=2))
    return EXIT_OK


def _is_agent_file(path: str) -> bool:
    """Whether `path` reads as an agent file rather than a graph file, by its top-level
    keys: the keys only one of the two formats has (`model`, `tools` … or `nodes`, `edges`,
    `entry` …), and keys misspelt from them (`node`), count for it; the one with more wins.
    On a tie (only `schema_version` and `name`, say) a file with `schema_version` is an
    agent file, as graph files often leave it out. Read bounded (`read_source`) with the
    graph loader's parser; a file it cannot read is left to the graph loader, which reports
    why."""
    from loomgraph.authoring.loader import SourceRefused, parse_yaml, read_source

    try:
        head, _, _ = parse_yaml(read_source(path), path)
    except SourceRefused:
        return False
    if not isinstance(head, dict):
        return False
    agent, graph = _format_keys()
    votes = {"agent": 0, "graph": 0}
    for key in map(str, head):
        for side, keys in (("agent", agent), ("graph", graph)):
            if key in keys or difflib.get_close_matches(key, keys, n=1, cutoff=0.8):
                votes[side] += 1
    if votes["agent"] != votes["graph"]:
        return votes["agent"] > votes["graph"]
    return "schema_version" in head


def _format_keys() -> tuple[list[str], list[str]]:
    """The top-level keys only agent files have, and those only graph files have."""
    from loomgraph.authoring.agent_spec import AgentSpec
    from loomgraph.authoring.loader import graph_keys

    agent = [f.alias or name for name, f in AgentSpec.model_fields.items()]
    graph = graph_keys()
    return [k for k in agent if k not in graph], [k for k in graph if k not in agent]


def _validate(args: argparse.Namespace) -> int:
    from loomgraph.authoring.agent_file import AgentFileError
    from loomgraph.authoring.library import graph_file, unknown_graph
    from loomgraph.authoring.loader import load_graph_file
    from loomgraph.errors import GraphValidationError

    files = [*args.files, *([args.agent] if args.agent else [])]
    if not files:
        return usage("validate needs FILE arguments or --agent FILE")
    failed = unknown = False
    for file in files:
        # Found as `run --graph` and `render` find it (a built-in name too). One that names
        # nothing is bad input (exit 2, as for `render`), said as they say it; the others
        # are still checked. A path that is there but cannot be read is the file's problem.
        found = graph_file(file)
        if found is None and not os.path.lexists(file):
            unknown = True
            said = f"no agent file {file!r}" if file == args.agent else unknown_graph(file)
            say(f"{file}: {said}", "red")
            continue
        found = found or Path(file)
        try:
            if file == args.agent or _is_agent_file(str(found)):
                # Checked as `Agent.from_file` checks it, its permissions and audit log too
                # (which only their backends can check), building nothing. Imported here: the
                # wiring layer loads the engine, which checking a graph file does without.
                from loomgraph.agent.from_file import validate_agent_file

                validate_agent_file(file)
            else:
                load_graph_file(found)
        except (GraphValidationError, AgentFileError) as err:
            failed = True
            for problem in err.problems:
                say(str(problem), "red")
        else:
            say(f"{file}: ok", "green")
    return EXIT_USAGE if unknown else EXIT_FAILED if failed else EXIT_OK


def _render(args: argparse.Namespace) -> int:
    from loomgraph.authoring.library import load_graph
    from loomgraph.authoring.render import render

    graph = agent_args.graph_of(args, None)
    if graph is None:
        return usage("render needs a GRAPH or --agent FILE")
    render(load_graph(graph), Path(args.output), expand=args.expand)
    say(f"wrote {args.output}", "green")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
