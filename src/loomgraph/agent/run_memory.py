"""What a run takes from memory (its first state) and gives back (its episode)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from loomgraph.engine.scope import RunScope
from loomgraph.engine.taint import note_messages
from loomgraph.graph.compiled import CompiledGraph
from loomgraph.protocols import Episode, Seed
from loomgraph.protocols.events import MEMORY_REMEMBER_FAILED

_log = logging.getLogger(__name__)


async def seeded_state(
    scope: RunScope,
    graph: CompiledGraph,
    instructions: str,
    prompt: str,
    user_id: str | None,
    session_id: str | None,
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The first state (memory's seed in the system prompt, the session's turns, the prompt)
    and the parts of the seed that are untrusted text."""
    deps = scope.deps
    seed = await deps.memory.seed(user_id=user_id, session_id=session_id, query=prompt)
    scope.system = instructions + (f"\n\n{seed}" if seed else "")
    # Earlier runs' answers it recalls: untrusted here too (kept with the run's start).
    untrusted = seed.untrusted if isinstance(seed, Seed) else ()
    for text in untrusted:
        scope.untrusted.add(text)
    history = await deps.memory.history(user_id=user_id, session_id=session_id)
    # What tools returned in earlier runs is as untrusted now as it was then.
    note_messages(scope.untrusted, deps.tools, history)
    state = graph.schema.initial(
        {"input": prompt, "messages": [*history, {"role": "user", "content": prompt}]}
    )
    return state, untrusted


def episode_of(
    run_id: str,
    user_id: str | None,
    session_id: str | None,
    prompt: str,
    output: Any,
    state: dict[str, Any],
) -> Episode:
    """The episode a completed run leaves in memory: its prompt, answer and the tools used."""
    tools = [m.get("name", "") for m in state.get("messages") or () if m.get("role") == "tool"]
    return Episode(user_id, session_id, run_id, prompt, str(output), tools, time.time())


async def remember(
    scope: RunScope, episode: Episode, on_episode: Callable[[Episode], None] | None
) -> None:
    """Keep a finished run's episode in memory, then hand it to `on_episode` (fact
    extraction). The run's end is journaled already, so a failure (an outage, text memory
    cannot store) is reported as a `memory_remember_failed` event and the run returns its
    result all the same."""
    try:
        await scope.deps.memory.remember(episode)
    except Exception as err:
        error = f"{type(err).__name__}: {err}"
        _log.warning("run %s: memory did not keep its episode: %s", episode.run_id, error)
        await scope.emit(MEMORY_REMEMBER_FAILED, {"error": error}, None, scope.seq)
        return
    # Facts are written with no egress check and recalled later as the user's: an answer
    # quoting untrusted text (a tool result) is not mined for them.
    if on_episode is not None and not scope.untrusted.carried_by(episode.output):
        on_episode(episode)
