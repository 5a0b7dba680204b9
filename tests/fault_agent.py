"""The fleet tests' agent (`fleet_agent`) with faults the tests name by environment:
`--agent fault_agent:make` in `loomgraph worker` subprocesses.

- `FLEET_COMMAND_TIMEOUT`: the journal's `command_timeout` (seconds; default 15).
- `FAULT_KILL_ITEM`, `FAULT_KILL_AT`, `FAULT_ONCE`: the `work` call whose `item` is
  `FAULT_KILL_ITEM` SIGKILLs its own process at `FAULT_KILL_AT` — `start` (before the side
  effect) or `after_effect` (the ledger row written, the outcome not yet journaled) — the
  first time only: the process that creates the file `FAULT_ONCE` dies, later ones go on.
- `FLEET_INTERRUPT`: the run waits for a number (fleet_agent's graph, with `did` here), and
  `FAULT_KILL_AT=did` SIGKILLs the process in the node after the interrupt, once.

Everything else is `fleet_agent`'s (its docstring says what `work` writes to the ledger).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import fleet_agent
from loomgraph import Agent
from loomgraph.runtime.postgres import PostgresRuntime
from loomgraph.tools.context import ToolContext

HOW_MANY = fleet_agent.HOW_MANY.replace("fleet_agent:did", "fault_agent:did")


def _die_once(point: str) -> None:
    """SIGKILL this process at `point` if the test named it and no process died there yet."""
    if os.environ.get("FAULT_KILL_AT") != point:
        return
    try:
        fd = os.open(os.environ["FAULT_ONCE"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.fsync(fd)
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


async def work(item: str, context: ToolContext) -> str:
    """Do one unit of work for the user (writes the side-effect ledger)."""
    named = item == os.environ.get("FAULT_KILL_ITEM")
    if named:
        _die_once("start")
    done = await fleet_agent.work(item, context)
    if named:
        _die_once("after_effect")
    return done


def did(state: Any) -> dict[str, Any]:
    """The answer of a `HOW_MANY` run (dying first when the test says so)."""
    _die_once("did")
    return fleet_agent.did(state)


def make(**overrides: Any) -> Agent:
    """fleet_agent's Agent, with the faults above."""
    runtime = PostgresRuntime(
        os.environ["FLEET_DSN"],
        schema=os.environ["FLEET_SCHEMA"],
        lease_seconds=float(os.environ.get("FLEET_LEASE", "30")),
        pool_size=4,
        command_timeout=float(os.environ.get("FLEET_COMMAND_TIMEOUT", "15")),
    )
    options: dict[str, Any] = {"runtime": runtime, "tools": [work]}
    if os.environ.get("FLEET_INTERRUPT"):
        from loomgraph.authoring.loader import graph_from_yaml

        options["architecture"] = graph_from_yaml(HOW_MANY)
    options.update(overrides)
    return fleet_agent.make(**options)
