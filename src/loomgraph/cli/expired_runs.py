"""`loomgraph runs send-on-expired`: every run waiting for an approval nobody gave in time,
sent on — the call denied as timed out — as `runs resume RUN` would send it. A server and a
fleet do this by themselves; a journal only the command line reads needs it run from cron
(`Agent.send_on_expired` in Python)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable

from loomgraph.cli.console import say
from loomgraph.cli.output import EXIT_OK
from loomgraph.errors import LoomgraphError
from loomgraph.protocols import RunStatus, Runtime

Resume = Callable[[argparse.Namespace, Runtime], Awaitable[int]]


async def send_on_expired(args: argparse.Namespace, runtime: Runtime, resume: Resume) -> int:
    """`resume` (without an answer) each run of `args.user` (all users: None) whose approval
    request passed its deadline, oldest first; a run that cannot be sent on (another
    agent's, driven elsewhere, answered or ended meanwhile, its graph no longer compiles) is
    named on stderr and skipped."""
    from loomgraph.agent.resume_answers import unanswered
    from loomgraph.agent.resume_errors import ResumeError

    sent = 0
    for record in await runtime.runs(args.user, status=RunStatus.AWAITING_APPROVAL):
        try:
            unanswered(record)  # the check a resume without an answer makes
        except ResumeError:  # in time, waiting for a value, or for nothing
            continue
        one = argparse.Namespace(**{**vars(args), "run_id": record.run_id, "value": None})
        try:
            await resume(one, runtime)
        except LoomgraphError as err:  # its own trouble (a graph that no longer compiles,
            # another agent's, driven elsewhere): the other runs are still sent on
            print(f"loomgraph: run {record.run_id} not sent on: {err}", file=sys.stderr)
            continue
        sent += 1
    if not args.json:
        say(f"{sent} run{'' if sent == 1 else 's'} sent on past an approval deadline")
    return EXIT_OK
