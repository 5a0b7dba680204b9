"""A new user's first hour: a session without memory, an unknown node in `run_node`, a
fork's announced prompt (found by a probe; each test failed before its fix)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from loomgraph import Agent, Event
from loomgraph.errors import LoomgraphError
from loomgraph.testing import run_node


async def test_session_without_memory_keeps_the_conversation_or_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """README's first example runs `agent.run(..., user_id="alice", session_id="c1")` on an
    Agent made without `memory=`; `--session` is "a session id grouping runs of one chat".
    A second run in session c1 starts with nothing of the first (the default `NoMemory`), and
    nothing warns: the session id is recorded and silently does nothing. The second turn
    should see the first, or the Agent should warn that a session needs `memory=`."""
    caplog.set_level(logging.WARNING)
    agent = Agent("You are a helpful assistant.", model="echo")
    await agent.run("My name is Bob.", user_id="alice", session_id="c1")
    second = await agent.run("What is my name?", user_id="alice", session_id="c1")
    history = await agent.history(second.run_id)
    seen = [m["content"] for m in history[-1].state["messages"]]
    warned = any("memory" in r.getMessage().lower() for r in caplog.records)
    assert "My name is Bob." in seen or warned, seen


# --- 4. Unclear errors and output -------------------------------------------------------


async def test_run_node_of_an_unknown_node_is_a_loomgraph_error() -> None:
    """docs/testing.md: a test calls `run_node("react", "modle", ...)` with a typo. It gets
    a bare `KeyError` (loomgraph/testing.py), whose message pytest shows inside quotes, rather
    than a loomgraph error naming the graph and its nodes, as `UnknownGraph` does for a
    misspelt graph name."""
    with pytest.raises(LoomgraphError, match="modle"):
        await run_node("react", "modle", {"messages": []})


async def test_a_fork_announces_the_input_it_was_given(tmp_path: Path) -> None:
    """docs/runtime.md: `loomgraph runs fork RUN_ID --at 1 --patch '{"input": "…"}'`. The
    fork's state has the patched input, and its journaled `run_started` says so, but the
    `run_started` event the fork emits live (to `on_event` hooks, and printed by the command
    as `run_started run=… prompt='…'`) names the parent's prompt: the session going on with
    the fork is made with `prompt_of(parent record)` (agent/resuming.py), so the output says
    the fork ran the old question."""
    agent = Agent("x", model="echo", runtime=f"sqlite:{tmp_path / 'j.db'}")
    first = await agent.run("the old question")
    seen: list[dict[str, object]] = []

    @agent.hooks.on_event
    def record(event: Event) -> None:
        if event.kind == "run_started":
            seen.append(dict(event.payload))

    fork = await agent.fork(first.run_id, at=0, patch={"input": "the new question"})
    history = await agent.history(fork.run_id)
    assert history[-1].state["input"] == "the new question"
    assert [p["prompt"] for p in seen] == ["the new question"], seen
