"""A journal that cannot be reached mid-run is not the run's failure: the run is left where
its journal has it (`running`), the caller gets `JournalUnavailable`, and a resume once the
journal is back ends the run as an uninterrupted one would.

The outage is real: another connection holds the SQLite file's write lock for longer than the
journal's busy timeout, taken while the tool runs, so the tool's outcome cannot be written. It
is a blip: the lock is let go as soon as anything reports the failure, so a run that was
journaled as failed for it would be.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from loomgraph import Agent
from loomgraph.errors import ServiceUnavailable
from loomgraph.governance.null import NoHooks
from loomgraph.models import ScriptedModel
from loomgraph.protocols import Event, RunStatus
from loomgraph.protocols.events import ERROR
from loomgraph.runtime.errors import JournalUnavailable
from loomgraph.runtime.sqlite import SqliteRuntime

blocker: list[sqlite3.Connection] = []
executed: list[str] = []  # outside the journal: every execution, by idempotency key


async def lookup(city: str) -> str:
    """Look a city up (the journal becomes unreachable while this runs)."""
    executed.append(city)
    if blocker:
        blocker[0].execute("BEGIN IMMEDIATE")  # held until the test lets go
    return f"{city}: 3 million"


def _unblock() -> None:
    if blocker:
        blocker[0].execute("ROLLBACK")
        blocker[0].close()
        blocker.clear()


class BlipHooks(NoHooks):
    """The journal comes back the moment the run reports a failure."""

    async def on_event(self, event: Event) -> None:
        """Let the lock go at the first `error` event."""
        if event.kind == ERROR:
            _unblock()


def _agent(path: Path) -> Agent:
    call = {"tool_calls": [{"tool": "lookup", "args": {"city": "Rome"}}]}
    return Agent(
        "x",
        model=ScriptedModel([call, "Rome has 3 million people"]),
        tools=[lookup],
        runtime=SqliteRuntime(path, busy_timeout=0.2),
        hooks=BlipHooks(),
    )


async def test_a_journal_outage_mid_run_leaves_the_run_to_be_resumed(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    agent = _agent(path)
    await agent.deps.runtime.connect()  # type: ignore[attr-defined]
    blocker[:] = [sqlite3.connect(path, isolation_level=None)]
    executed.clear()
    try:
        with pytest.raises(JournalUnavailable) as raised:
            await agent.run("How many people live in Rome?")
        assert isinstance(raised.value, ServiceUnavailable)
        [run] = await agent.deps.runtime.runs()
        # Not journaled as failed (the journal was not there to take it, and it is not the
        # run's failure): the run is where a crash would have left it.
        assert run.status == RunStatus.RUNNING
    finally:
        _unblock()
    # The journal is back: the run goes on from its journal, as after a crash.
    resumed = await agent.resume(run.run_id)
    assert resumed.status == RunStatus.COMPLETED
    assert resumed.output == "Rome has 3 million people"
    # The tool's outcome was never journaled, so it ran again, with the same key.
    assert executed == ["Rome", "Rome"]
    await agent.aclose()
