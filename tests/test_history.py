"""`agent.history()` starts at seq 0 (the first state), and `diff` compares checkpoints."""

from __future__ import annotations

from pathlib import Path

from loomgraph import Agent
from loomgraph.agent.checkpoints import diff
from loomgraph.models import ScriptedModel
from loomgraph.runtime import SqliteRuntime


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


async def test_history_starts_with_the_first_state_and_diff_takes_checkpoints(
    tmp_path: Path,
) -> None:
    runtime = SqliteRuntime(tmp_path / "journal.db")
    agent = Agent(
        "x",
        model=ScriptedModel([{"tool_calls": [{"tool": "add", "args": {"a": 2, "b": 3}}]}, "5"]),
        tools=[add],
        runtime=runtime,
    )
    try:
        result = await agent.run("add")
        history = await agent.history(result.run_id)
        first = history[0]
        assert (first.seq, first.node, first.visit, first.next_node, first.patch) == (
            0,
            "",
            0,
            "model",
            {},
        )
        assert first.state["input"] == "add"
        assert [m["role"] for m in first.state["messages"]] == ["user"]
        assert [c.seq for c in history] == [0, 1, 2, 3]
        changed = diff(history[0], history[-1])
        assert set(changed) >= {"messages", "usage"} and "input" not in changed
        before, after = changed["messages"]
        assert len(before) == 1 and len(after) == 4
        assert diff(history[1], history[1]) == {}
    finally:
        await runtime.close()
