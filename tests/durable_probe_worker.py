"""A subprocess for tests/test_probe_durable.py: one governed run, SIGKILLed at a named point
of how a completed run ends.

    python tests/durable_probe_worker.py run    DIR POINT
    python tests/durable_probe_worker.py resume DIR RUN_ID

DIR holds `journal.db` (SQLite journal), `memory.db` (SQLite memory), `audit.jsonl` (an
unsigned FileAuditLog) and `ledger.tsv` (one line per tool call that acted, with its
idempotency key: a side effect outside the journal). The run (user alice, session s1): the
model calls `lookup`, then answers. The worker prints `{"run_id": …}` first, `{"crash": …}`
just before it kills itself, and `{"result": …}` at the end.

Points: `after_remember` (memory kept the episode; the run's end is not journaled),
`after_finish` (the run's end, `completed`, is journaled; nothing after), `none`;
`hold_remember`: no kill, memory's `remember` prints `{"remembering": RUN_ID}` and blocks the
process on a stdin line before it writes; and `hold`:
no kill, `lookup` prints `{"holding": KEY}` and waits for a line on stdin before it acts (a
worker to SIGSTOP while it holds the call). The journal's lease is 6 s; every run has a
budget (caps no run reaches), its ledger in the journal's database.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from loomgraph import Agent
from loomgraph.governance import BudgetConfig, StandardBudget
from loomgraph.memory import SqliteMemory
from loomgraph.models import ScriptedModel
from loomgraph.observability import FileAuditLog
from loomgraph.protocols import Episode, RunStatus
from loomgraph.runtime.errors import LeaseLost
from loomgraph.runtime.sqlite import SqliteRuntime

PROMPT = "Where is Paris?"
ANSWER = "Paris is in France."
SCRIPT: list[Any] = [
    {"text": "Looking it up.", "tool_calls": [{"tool": "lookup", "args": {"city": "Paris"}}]},
    ANSWER,
]


def say(**fields: Any) -> None:
    """One JSON line on stdout, flushed at once."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def die(point: str) -> None:
    """SIGKILL this process, saying where first."""
    say(crash=point)
    os.kill(os.getpid(), signal.SIGKILL)


class KillingMemory(SqliteMemory):
    """Dies right after memory kept the episode, when told to."""

    point = "none"

    async def remember(self, episode: Episode) -> bool:
        """Keep the episode, then maybe die (or, `hold_remember`, first wait, blocked)."""
        if self.point == "hold_remember":
            # The lease was read just before (`keep_episode`); the process stalls here,
            # its event loop blocked (as a long pause or SIGSTOP would), until told to go.
            say(remembering=episode.run_id)
            sys.stdin.readline()
        stored = await super().remember(episode)
        if self.point == "after_remember":
            die(self.point)
        return stored


class KillingRuntime(SqliteRuntime):
    """Dies right after the run's end is journaled, when told to."""

    point = "none"

    async def finish_run(
        self, run_id: str, status: RunStatus, reason: str, result: dict[str, Any] | None
    ) -> None:
        """Journal the end, then maybe die."""
        await super().finish_run(run_id, status, reason, result)
        if self.point == "after_finish" and status == RunStatus.COMPLETED:
            die(self.point)


def make_agent(where: Path, point: str) -> tuple[Agent, KillingRuntime, KillingMemory]:
    """The agent, its journal and its memory, in `where`."""
    ledger = where / "ledger.tsv"

    async def lookup(city: str, idempotency_key: str) -> str:
        """Find the country of a city."""
        if point == "hold":
            say(holding=idempotency_key)
            await asyncio.to_thread(sys.stdin.readline)
        with open(ledger, "a", encoding="utf-8") as f:
            f.write(f"{idempotency_key}\t{city}\n")
            f.flush()
            os.fsync(f.fileno())
        return "France"

    runtime = KillingRuntime(where / "journal.db", lease_seconds=6.0)
    memory = KillingMemory(where / "memory.db")
    runtime.point = memory.point = point
    agent = Agent(
        "You answer geography.",
        model=ScriptedModel(SCRIPT),
        tools=[lookup],
        memory=memory,
        runtime=runtime,
        budget=StandardBudget(BudgetConfig(tool_calls=1000)),
        audit_log=FileAuditLog(where / "audit.jsonl", unsigned=True),
    )
    return agent, runtime, memory


async def main(mode: str, where: Path, arg: str) -> None:
    """Run (dying at `arg`) or resume run `arg`."""
    agent, runtime, memory = make_agent(where, arg if mode == "run" else "none")
    try:
        if mode == "run":
            session = agent.session(PROMPT, user_id="alice", session_id="s1")
            say(run_id=session.run_id)
            result = await session.execute(_ignore)
        else:
            result = await agent.resume(arg)
        say(result=result.to_dict())
    except LeaseLost as err:  # a zombie: another worker took the run over
        say(lease_lost=str(err))
        raise SystemExit(4) from None
    finally:
        await agent.aclose()
        await memory.close()
        await runtime.close()


async def _ignore(event: Any) -> None:
    """The run's events go nowhere."""


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3]))
