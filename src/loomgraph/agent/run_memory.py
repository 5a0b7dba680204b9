"""What a run takes from memory (its first state) and gives back (its episode)."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from loomgraph.engine.scope import RunScope
from loomgraph.engine.taint import note_messages
from loomgraph.graph.compiled import CompiledGraph
from loomgraph.protocols import Episode, Seed, ToolHost

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
    and what of the seed and the prompt is untrusted text."""
    deps = scope.deps
    seed = await deps.memory.seed(user_id=user_id, session_id=session_id, query=prompt)
    scope.system = instructions + (f"\n\n{seed}" if seed else "")
    # Earlier runs' answers and tool names it recalls: untrusted here too (kept with the
    # run's start). A name of a tool this run offers is its own configuration, not text a
    # tool wrote, and would only raise false alarms.
    recalled = seed.untrusted if isinstance(seed, Seed) else ()
    untrusted = tuple(text for text in recalled if deps.tools.spec(text) is None)
    # An Agent run by another run's tool: a prompt carrying text of that run's untrusted
    # results (a web page's instructions passed on) is untrusted here, kept with the start.
    callers = scope.callers_untrusted
    if callers is not None and callers.carried_by(prompt):
        untrusted = (*untrusted, prompt)
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
    """The episode a completed run leaves in memory: its prompt, answer and the names of the
    tools its messages show results of (`run_episode.keep_episode` keeps those the run
    offered)."""
    tools = [m.get("name", "") for m in state.get("messages") or () if m.get("role") == "tool"]
    return Episode(user_id, session_id, run_id, prompt, str(output), tools, time.time())


def offered_only(episode: Episode, tools: ToolHost) -> Episode:
    """`episode` naming only tools that `tools` offers: a call of a tool that does not exist
    never ran, and its name is whatever the model wrote (text a tool returned, an injection),
    which later runs' seeds would show as the tools this run used."""
    used = [
        name
        for name in episode.tool_calls
        if isinstance(name, str) and tools.spec(name) is not None
    ]
    return episode if used == episode.tool_calls else replace(episode, tool_calls=used)
