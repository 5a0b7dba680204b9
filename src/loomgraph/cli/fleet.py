"""The worker fleet from the command line: `loomgraph worker --agent FILE|MODULE:ATTR` (one
process of the fleet) and `loomgraph runs cancel RUN_ID --agent …`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from loomgraph._storage.dsn import describe_dsn
from loomgraph.cli.agent_args import add_loaded_agent_option, load_agent
from loomgraph.cli.journal import UsageError, require_journal
from loomgraph.cli.option_types import count, seconds
from loomgraph.cli.output import EXIT_BUSY, EXIT_OK, EXIT_USAGE, LOG_LEVELS

__all__ = ["COMMANDS", "add_parser", "add_runs_parsers", "handle", "handle_runs"]

# The `runs` subcommands this module adds.
COMMANDS = frozenset({"cancel"})


def add_parser(subparsers: Any) -> None:
    """Add `worker` to the command's subparsers."""
    worker = subparsers.add_parser(
        "worker", help="take submitted runs from the Postgres queue and advance them"
    )
    add_loaded_agent_option(worker, "its runtime must be a postgres:// journal")
    worker.add_argument(
        "--concurrency", type=count(2), default=8, help="runs this worker advances at once (>= 2)"
    )
    worker.add_argument("--queues", default="runs", help="comma-separated queues to take jobs from")
    worker.add_argument(
        "--per-user",
        type=count(0),
        default=0,
        metavar="K",
        help="at most K runs of one user advance at once, fleet-wide (0: no limit)",
    )
    worker.add_argument(
        "--heartbeat",
        type=seconds(),
        default=10.0,
        metavar="SECONDS",
        help="a run whose worker has not beaten for this long is taken by another worker",
    )
    worker.add_argument(
        "--poll", type=seconds(), default=1.0, metavar="SECONDS", help="idle look at the queue"
    )
    worker.add_argument(
        "--expiry",
        type=seconds(),
        default=5.0,
        metavar="SECONDS",
        help="look for runs whose approval request expired this often; send them on (denied)",
    )
    worker.add_argument(
        "--log-level",
        default="warning",
        type=str.lower,
        choices=LOG_LEVELS,
        help="debug, info, warning or error (to stderr)",
    )


def add_runs_parsers(cmds: Any) -> None:
    """Add `runs cancel` to the `runs` subcommands."""
    cancel = cmds.add_parser(
        "cancel", help="cancel a fleet run: a queued one never starts, a running one stops"
    )
    cancel.add_argument("run_id", help="the run to cancel")
    add_loaded_agent_option(cancel, "the run is in its journal")
    cancel.add_argument("--by", default="cli", help="who cancels (journaled in the reason)")


def handle_runs(args: argparse.Namespace) -> int:
    """`runs cancel`: exit 0 when cancelled or stopping, 2 for an unknown or ended run."""
    return asyncio.run(_cancel(args))


async def _cancel(args: argparse.Namespace) -> int:
    from loomgraph.agent.fleet_errors import FleetError
    from loomgraph.protocols import UnknownRun
    from loomgraph.runtime.errors import JournalError

    agent = load_agent(args.agent)
    try:
        # A run to cancel is in a journal that is there: none is made where a typo points.
        await require_journal(agent.deps.runtime)
        outcome = await agent.cancel(args.run_id, by=args.by)
    except (FleetError, UnknownRun, UsageError, JournalError) as err:
        print(f"loomgraph: {err}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        await agent.aclose()
    print(f"run {args.run_id}: {outcome}")
    return EXIT_OK


def handle(args: argparse.Namespace) -> int:
    """Run the worker until SIGTERM or SIGINT (the runs in hand are finished first)."""
    from loomgraph.agent.fleet_errors import FleetError
    from loomgraph.workers.worker import Worker, WorkerOptions

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    logging.getLogger("pgqueuer").setLevel(max(logging.WARNING, logging.root.level))
    if logging.root.level > logging.DEBUG:  # their tracebacks, with --log-level debug only
        for name in ("pgqueuer", "asyncpg.pool"):
            logging.getLogger(name).addFilter(_one_line)
    options = WorkerOptions(
        concurrency=args.concurrency,
        queues=tuple(q.strip() for q in args.queues.split(",")),  # an empty one is refused
        per_user=args.per_user,
        heartbeat_seconds=args.heartbeat,
        poll_seconds=args.poll,
        expiry_seconds=args.expiry,
    )
    agent = load_agent(args.agent)
    try:
        worker = Worker(agent, options)
    except FleetError as err:
        print(f"loomgraph: {err}", file=sys.stderr)
        asyncio.run(agent.aclose())
        return EXIT_USAGE
    try:
        asyncio.run(_run(worker))
    except _ConnectionBroke as broke:
        where = describe_dsn(agent.deps.runtime.dsn)
        print(
            f"loomgraph worker: the connection to {where} broke ({broke.reason}); exiting: "
            "restart the worker (a supervisor does) and its runs are recovered",
            file=sys.stderr,
        )
        return EXIT_BUSY
    return EXIT_OK


def _one_line(record: logging.LogRecord) -> bool:
    """A record of the queue's or the pool's, its exception said in its line, not as a
    traceback: an outage made each worker log hundreds of lines of them."""
    if record.exc_info and record.exc_info[1] is not None:
        err = record.exc_info[1]
        record.msg, record.args = f"{record.getMessage()} ({type(err).__name__}: {err})", None
        record.exc_info, record.exc_text = None, None
    return True


class _ConnectionBroke(Exception):
    """The worker's database connection broke after it took jobs: `reason` says how."""

    def __init__(self, err: BaseException) -> None:
        super().__init__(err)
        self.reason = f"{type(err).__name__}: {err}"


async def _run(worker: Any) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    took_jobs = False

    def ready() -> None:
        nonlocal took_jobs
        took_jobs = True
        # One line on stdout when jobs are taken, for supervisors and tests.
        print("loomgraph worker: ready", flush=True)

    runtime = worker.agent.deps.runtime
    if not await runtime.holds_journal():
        # Made, as the first of a fleet's processes must; but a typo in the schema or the
        # database name would otherwise give a healthy worker serving an empty queue.
        print(
            f"loomgraph worker: {runtime.location} holds no journal yet: this worker makes "
            "one; runs submitted to another journal are not seen here (a typo in the "
            "agent's runtime?)",
            file=sys.stderr,
            flush=True,
        )
    try:
        await worker.run(ready=ready)
    except Exception as err:
        # Once jobs were taken, a connection that breaks is an outage, not a bad option: one
        # line and EX_TEMPFAIL, as a supervisor expects (a traceback told it nothing more).
        if took_jobs and _connection_error(err):
            raise _ConnectionBroke(err) from err
        raise
    finally:
        await worker.agent.aclose()
    print("loomgraph worker: stopped", flush=True)


def _connection_error(err: BaseException) -> bool:
    """Whether `err` says the database went away (closed, refused, reset, timed out)."""
    from loomgraph._storage.pg_pool import import_asyncpg
    from loomgraph.errors import ServiceUnavailable

    asyncpg = import_asyncpg("loomgraph worker")
    lost = (OSError, TimeoutError, ServiceUnavailable)
    return isinstance(err, (*lost, asyncpg.InterfaceError, asyncpg.PostgresConnectionError))
