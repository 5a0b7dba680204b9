"""A subprocess for tests/test_memory_crash.py: one run that dies as memory is keeping it.

    python tests/memory_crash_support.py JOURNAL_PATH MEMORY_PATH

The run (user alice, session s1) completes; then, as the Agent hands its episode to memory,
the process SIGKILLs itself, before anything more is written (a crash between the run's
graph ending and its end being journaled, with memory not yet written). It prints
`{"run_id": …}` on one line first.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from loomgraph import Agent
from loomgraph.memory import SqliteMemory
from loomgraph.models import ScriptedModel
from loomgraph.protocols import Episode

PROMPT = "What is the weather in Porto?"
ANSWER = "Sunny in Porto."


class DyingMemory(SqliteMemory):
    """A SqliteMemory whose process is killed as it is asked to keep an episode."""

    async def remember(self, episode: Episode) -> None:
        """Die before anything is written."""
        print(json.dumps({"run_id": episode.run_id}), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


async def main(journal: str, memory: str) -> None:
    """Run once; the process never gets past memory."""
    agent = Agent(
        "x",
        model=ScriptedModel([ANSWER]),
        memory=DyingMemory(memory),
        runtime=f"sqlite:{journal}",
    )
    await agent.run(PROMPT, user_id="alice", session_id="s1")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
