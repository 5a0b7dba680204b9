"""The Agent that goes on with a journaled run (`runs resume | retry | approve | deny |
fork`): which graph it goes on with, picked in one place for every command, and the command
line's model, tools and permissions."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from loomgraph.cli import agent_args
from loomgraph.cli.journal import UsageError
from loomgraph.cli.output import emit_event
from loomgraph.governance.null import NoHooks
from loomgraph.protocols import RunRecord, Runtime

if TYPE_CHECKING:  # compiled graphs are loaded when a command goes on with a run
    from loomgraph.agent.pinning import GraphChoice
    from loomgraph.graph.compiled import CompiledGraph

# The words of `--graph` that are no graph: the `GraphChoice`s of `Agent.resume`.
PINNED: Final = "pinned"
CURRENT: Final = "current"

GRAPH_HELP = (
    "pinned (default): go on with the graph the run started with, as the journal keeps it, "
    "even if its file changed or is gone; current: move the run to the agent file's graph "
    "(-a) as it reads now, else to the built-in graph of the run's graph name (a run started "
    "from a graph file: pass that file as GRAPH); GRAPH: move it to this built-in graph or "
    "YAML file. A move is made only if the run's position (its node, visits and state "
    "fields) is valid in the new graph; otherwise it names the node or field and seq"
)


JSON_HELP = "print one JSON line, the result, and no events (docs/cli.md)"


def add_graph_option(parser: argparse.ArgumentParser) -> None:
    """`--graph pinned|current|GRAPH`: the graph a command that goes on with a run uses."""
    parser.add_argument(
        "--graph",
        dest="graph_choice",
        default=PINNED,
        metavar="pinned|current|GRAPH",
        help=GRAPH_HELP,
    )


@dataclass(frozen=True, slots=True)
class RunGraph:
    """The graph an Agent going on with a run is built on (a kept `Graph`, a built-in name or
    a YAML path), and whether the run stays on the graph it started with or moves to it."""

    architecture: Any
    choice: GraphChoice


async def kept_graph(runtime: Runtime, record: RunRecord) -> CompiledGraph | None:
    """The graph `record`'s run started with, compiled from the journal; None when the
    journal does not keep it (a run older than kept graphs); UsageError when it no longer
    compiles here (an import path it names is gone)."""
    from loomgraph.agent.pinning import compile_pinned
    from loomgraph.errors import GraphError

    kept = await runtime.graph(record.graph_hash)
    if kept is None:
        return None
    try:
        return compile_pinned(kept)
    except (GraphError, ImportError, ValueError) as err:
        raise UsageError(
            f"run {record.run_id} started with graph {record.graph_name!r} version "
            f"{record.graph_hash}, which the journal keeps but which does not compile here: "
            f"{err}; --graph current or --graph GRAPH moves the run to a graph as it reads "
            "now, if the run's position fits it"
        ) from None


async def run_graph(
    args: argparse.Namespace, runtime: Runtime, record: RunRecord, wanted: str
) -> RunGraph:
    """The graph to go on with `record` on, as `wanted` says: `pinned`, the graph the run
    started with as the journal keeps it; `current`, the run's graph as it reads now (the
    agent file's, else the built-in graph of the run's graph name); anything else a built-in
    graph or YAML file the run moves to. A run the journal keeps no graph of goes on with
    its graph as it reads now."""
    if wanted not in (PINNED, CURRENT):
        return RunGraph(wanted, CURRENT)
    if wanted == PINNED:
        kept = await kept_graph(runtime, record)
        if kept is not None:
            return RunGraph(kept.graph, PINNED)
    return RunGraph(_current(args, record, wanted), PINNED if wanted == PINNED else CURRENT)


def _current(args: argparse.Namespace, record: RunRecord, wanted: str) -> Any:
    """The run's graph as it reads now: the agent file's, else the built-in of its name."""
    from loomgraph.authoring.library import builtin_names

    own = agent_args.graph_of(args, None)
    if own is not None:
        return own
    if record.graph_name in builtin_names():
        return record.graph_name
    # A graph file's path is not journaled: only the person who started the run knows it.
    why = (
        f"--graph current moves run {record.run_id} to its graph as it reads now"
        if wanted == CURRENT
        else f"the journal does not keep the graph run {record.run_id} started with"
    )
    raise UsageError(
        f"{why}, but graph {record.graph_name!r} is not a built-in graph: the run started from "
        f"a graph file, which the journal does not name. Pass that file: --graph PATH, such "
        f"as --graph {record.graph_name}.yaml, or the agent file that names it (-a FILE)"
    )


def agent_for(
    args: argparse.Namespace,
    runtime: Runtime,
    record: RunRecord,
    architecture: Any,
    permissions: Any = None,
    approval_handler: Any = None,
) -> Any:
    """An Agent to go on with `record` on `architecture` (see `run_graph`), with the given
    tools and permissions (a run resumes only under the policy it is pinned to, and under
    the budget caps and audit log it is pinned to, which only an agent file gives). Named as
    the agent file says (a run of an agent of another name is refused), else as the agent
    that started the run: the command line names the run and the tools to go on with it.
    It prints the run's events as `loomgraph run` does, but not with `--json`: then the
    command prints one line, the result. `approval_handler`: who answers an ask (the
    person at the terminal), else the run stops to wait for `runs approve`."""
    return agent_args.build_agent(
        args,
        instructions=None if args.agent else "",
        runtime=runtime,
        architecture=architecture,
        hooks=NoHooks() if args.json else _Printer(),
        permissions=permissions,
        approval_handler=approval_handler,
        name=None if args.agent else record.agent_name,
    )


class _Printer(NoHooks):
    """Hooks that print each event of the run, as `loomgraph run` does."""

    async def on_event(self, event: Any) -> None:
        """Print the event."""
        emit_event(event, False)
