"""What the commands that work on a journal share: opening it from `--runtime` or the agent
file, loading a run, the exit codes of its errors, and an Agent to go on with a run."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from loomgraph.cli import agent_args
from loomgraph.cli.output import EXIT_FAILED, emit_event, usage
from loomgraph.errors import GraphError, LoomgraphError
from loomgraph.governance.null import NoHooks
from loomgraph.protocols import RunRecord, Runtime, Transition, UnknownRun, close_backend
from loomgraph.runtime.errors import JournalError, RunConflict


class UsageError(LoomgraphError):
    """Bad input on the command line: an unknown run, seq, journal or graph (exit code 2)."""


def journaled(
    args: argparse.Namespace, command: Callable[[argparse.Namespace, Runtime], Awaitable[int]]
) -> int:
    """Open the journal, run the command, close the journal; errors become exit codes."""

    async def go() -> int:
        journal = agent_args.runtime_of(args)
        if not journal:
            raise UsageError("no journal: pass --runtime sqlite:PATH|postgres://… or --agent FILE")
        runtime = open_journal(journal)
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


async def load_record(runtime: Runtime, run_id: str) -> tuple[RunRecord, list[Transition]]:
    """A run's record and transitions; UsageError for a run the journal does not have."""
    record = await runtime.load_run(run_id)
    if record is None:
        raise UsageError(f"unknown run {run_id!r}")
    return record, await runtime.transitions(run_id)


def agent_for(
    args: argparse.Namespace,
    runtime: Runtime,
    record: RunRecord,
    permissions: Any = None,
    architecture: Any = None,
) -> Any:
    """An Agent for resuming or forking `record`: `architecture`, else --graph or the agent
    file's graph, else the run's graph by name; the given tools and permissions (a run
    resumes only under the policy it is pinned to). Named as the agent file says (a run of
    an agent of another name is refused), else as the agent that started the run: the
    command line names the run and the tools to go on with it."""
    return agent_args.build_agent(
        args,
        instructions=None if args.agent else "",
        runtime=runtime,
        architecture=architecture or (None if args.agent else record.graph_name),
        hooks=_Printer(args.json),
        permissions=permissions,
        name=None if args.agent else record.agent_name,
    )


class _Printer(NoHooks):
    """Hooks that print each event of the run, as `loomgraph run` does."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    async def on_event(self, event: Any) -> None:
        """Print the event."""
        emit_event(event, self.as_json)
