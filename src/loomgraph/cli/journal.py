"""What the commands that work on a journal share: opening it from `--runtime` or the agent
file, loading a run, and the exit codes and wording of its errors."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from loomgraph._storage.sqlite_held import GuardedConnection
from loomgraph.agent.fleet_errors import RunJobPending
from loomgraph.cli import advice, agent_args
from loomgraph.cli.output import EXIT_BUSY, usage
from loomgraph.errors import GraphError, LoomgraphError
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
            await require_journal(runtime)
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
        print(f"loomgraph: {err}{hint}; try again later", file=sys.stderr)
        return EXIT_BUSY
    except RunJobPending as err:  # a fleet run's answer queued before this one: it stands
        print(f"loomgraph: {err}", file=sys.stderr)
        return EXIT_BUSY
    except (
        UsageError,
        UnknownRun,
        JournalError,
        GraphError,
        ValueError,
        ImportError,
        OSError,
    ) as err:  # GraphChanged is a GraphError
        return usage(advice.worded(err))


# The journals a command's end forgets: `loomgraph run` may use one (its run cannot be
# resumed, and it says so); a `runs` command would find nothing in it.
IN_MEMORY = frozenset({"memory", "sqlite::memory:"})


def keeps_runs(spec: str | None) -> bool:
    """Whether the journal `spec` names keeps a run after the command ends (none, or one in
    memory, does not: its runs cannot be resumed or answered later)."""
    return bool(spec) and spec not in IN_MEMORY


def open_journal(spec: str, *, create: bool = False) -> Runtime:
    """The journal a `--runtime` names. `create`: a journal for a new run (`loomgraph run`),
    which may be made now, in memory too; else one that holds runs already: an SQLite file
    must exist, and a journal in memory (which would be empty) is refused."""
    from loomgraph.agent.deps import resolve_runtime
    from loomgraph.authoring.agent_spec import backend_spec_problem

    problem = backend_spec_problem(spec)
    if problem is not None:  # before the file check below, which would read `sqlite://x` as /x
        raise UsageError(f"journal {problem}")
    if not create and spec in IN_MEMORY:
        raise UsageError(
            f"--runtime {spec} keeps nothing between commands; use sqlite:PATH or postgres://…"
        )
    if spec.startswith("sqlite:") and not create:
        path = spec.removeprefix("sqlite:")
        if not Path(path).is_file():
            # Opening would create an empty journal; a typo should not look like "no runs".
            raise UsageError(f"no journal at {path!r}")
    return resolve_runtime(spec)


async def require_journal(runtime: Runtime) -> None:
    """UsageError unless `runtime` holds a journal already (`journal_meta` in its SQLite file
    or Postgres schema), looked for before anything is written: opening would create one,
    and a command that needs runs must not make an empty journal in whatever a typo names
    (the application's own database) and then report no runs."""
    from loomgraph.runtime.postgres import PostgresRuntime
    from loomgraph.runtime.sqlite import SqliteRuntime

    if isinstance(runtime, PostgresRuntime):
        there, where = await runtime.holds_journal(), runtime.location
    elif isinstance(runtime, SqliteRuntime):
        there = await asyncio.to_thread(_sqlite_holds_journal, runtime.path)
        where = runtime.location
    else:
        return  # a journal object of its own: it knows what it holds
    if not there:
        raise UsageError(
            f"no journal in {where}: it holds no loomgraph runs (`loomgraph run` with "
            "this --runtime makes one)"
        )


def _sqlite_holds_journal(path: str) -> bool:
    """Whether the SQLite file at `path` has a `journal_meta` table, read on a read-only
    connection; True when it cannot be read as a database (the journal's own open says
    why: damaged, locked, unreadable)."""
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=30.0, factory=GuardedConnection)
    except sqlite3.Error:
        return True
    try:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'journal_meta'"
        ).fetchone()
    except sqlite3.Error:
        return True
    finally:
        conn.close()
    return found is not None


async def load_record(runtime: Runtime, run_id: str) -> tuple[RunRecord, list[Transition]]:
    """A run's record and transitions; UsageError for a run the journal does not have."""
    record = await runtime.load_run(run_id)
    if record is None:
        raise UsageError(f"unknown run {run_id!r}")
    return record, await runtime.transitions(run_id)
