"""Size limits: a prompt too large is refused before anything is written, tool arguments too
large never reach the tool, and a tool result too large is cut (with a marker) before it is
journaled."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.errors import InputTooLarge
from loomgraph.models import ScriptedModel
from loomgraph.protocols import SizeLimits
from loomgraph.runtime import SqliteRuntime

ran: list[int] = []


def big_output(n: int) -> str:
    """Return n characters."""
    ran.append(n)
    return "x" * n


def note(text: str) -> str:
    """Keep a note."""
    ran.append(len(text))
    return "kept"


def calls(tool: str, **args: Any) -> dict[str, Any]:
    return {"tool_calls": [{"tool": tool, "args": args}]}


async def test_a_prompt_over_the_limit_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    agent = Agent(
        "x", model=ScriptedModel(["ok"]), runtime=runtime, size_limits=SizeLimits(prompt_chars=10)
    )
    with pytest.raises(InputTooLarge, match="the prompt is 11 characters; the limit is 10"):
        await agent.run("x" * 11)
    assert await runtime.runs() == []
    assert (await agent.run("x" * 10)).status == "completed"
    await runtime.close()


async def test_a_tool_result_over_the_limit_is_cut_before_it_is_journaled(tmp_path: Path) -> None:
    ran.clear()
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    agent = Agent(
        "x",
        model=ScriptedModel([calls("big_output", n=20_000), "done"]),
        tools=[big_output],
        runtime=runtime,
        size_limits=SizeLimits(tool_result_chars=1_000),
    )
    result = await agent.run("go")
    assert result.status == "completed" and ran == [20_000]
    (effect,) = [e for e in await runtime.effects(result.run_id) if e.kind == "tool"]
    assert effect.outcome is not None
    content = effect.outcome["content"]
    assert content.startswith("x" * 1_000) and len(content) < 1_200
    assert "the tool returned 20000 characters" in content
    history = await agent.history(result.run_id)
    message = history[2].patch["messages"][0]["content"]
    assert message == content  # what the model saw is what the journal kept
    await runtime.close()


async def test_tool_arguments_over_the_limit_never_reach_the_tool() -> None:
    ran.clear()
    agent = Agent(
        "x",
        model=ScriptedModel([calls("note", text="y" * 5_000), "gave up"]),
        tools=[note],
        size_limits=SizeLimits(tool_args_chars=1_000),
    )
    events = [e async for e in agent.stream("go")]
    (result,) = [e.payload["result"] for e in events if e.kind == "tool_result"]
    assert result["error_type"] == "invalid_arguments" and "at most 1000" in result["content"]
    assert ran == [] and events[-1].payload["status"] == "completed"


def _grow(state: Any) -> dict[str, Any]:
    return {"notes": ["n" * 1_000]}


def _rewrite(state: Any) -> dict[str, Any]:
    return {"plan": "p" * 1_000, "count": state["count"] + 1}


LOOPS = """
name: loops
entry: step
state:
  notes: {type: "list[str]", reducer: append, default: []}
  plan: {type: str, default: ""}
  count: {type: int, default: 0}
nodes:
  step: {kind: function, call: "lg_size_limits:%s", reads: [count], writes: [%s], max_visits: 40}
edges:
  - {from: step, to: step, when: "%s < 30"}
  - {from: step, to: END}
"""


def _loop(fn: str, writes: str, counter: str) -> Any:
    import sys
    import types

    from loomgraph.authoring.loader import graph_from_yaml

    module = types.ModuleType("lg_size_limits")
    module._grow = _grow  # type: ignore[attr-defined]
    module._rewrite = _rewrite  # type: ignore[attr-defined]
    sys.modules["lg_size_limits"] = module
    return graph_from_yaml(LOOPS % (fn, writes, counter))


async def test_a_state_that_would_outgrow_its_limit_fails_before_the_transition_is_written(
    tmp_path: Path,
) -> None:
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    agent = Agent(
        "x",
        model="echo",
        architecture=_loop("_grow", "notes", "notes | length"),
        runtime=runtime,
        size_limits=SizeLimits(state_chars=20_000),
    )
    result = await agent.run("go")
    assert result.status == "failed"
    assert "the run's state would be" in result.reason and "'step'" in result.reason
    assert "the limit is 20,000" in result.reason
    transitions = await runtime.transitions(result.run_id)
    written = sum(len(t.patch.get("notes", [])) for t in transitions)
    # Every note journaled fits; the one that did not was neither applied nor written.
    assert 15 <= written < 20 and len(transitions) == written
    await runtime.close()


async def test_a_replaced_field_counts_once_however_often_it_is_rewritten(tmp_path: Path) -> None:
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    agent = Agent(
        "x",
        model="echo",
        architecture=_loop("_rewrite", "plan, count", "count"),
        runtime=runtime,
        size_limits=SizeLimits(state_chars=5_000),  # 30 rewrites of 1,000 characters
    )
    result = await agent.run("go")
    assert result.status == "completed", result.reason
    assert len(await runtime.transitions(result.run_id)) == 30
    await runtime.close()


UNDONE = """
name: undone
entry: step
state:
  notes: {type: "list[str]", reducer: append, default: []}
  count: {type: int, default: 0}
nodes:
  step: {kind: function, call: "lg_size_limits:_grow", writes: [notes], on_error: again}
  again: {kind: function, call: "lg_size_limits:_count", reads: [count], writes: [count]}
edges:
  - {from: step, to: END, when: "count >= 10 or 1 // (count - count) > 0"}
  - {from: step, to: END}
  - {from: again, to: step}
"""


async def test_a_visit_that_failed_after_its_patch_counts_nothing_toward_the_limit(
    tmp_path: Path,
) -> None:
    """A patch undone (the edge condition after it failed: the run went to `on_error`) is not
    counted: ten failed visits of 1,000 characters each leave room for the one that succeeds."""
    from loomgraph.authoring.loader import graph_from_yaml

    _loop("_grow", "notes", "count")  # registers the module
    module: Any = sys.modules["lg_size_limits"]
    module._count = lambda state: {"count": state["count"] + 1}
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    agent = Agent(
        "x",
        model="echo",
        architecture=graph_from_yaml(UNDONE),
        runtime=runtime,
        size_limits=SizeLimits(state_chars=5_000),
    )
    result = await agent.run("go")
    transitions = await runtime.transitions(result.run_id)
    await runtime.close()
    assert [t.node for t in transitions].count("again") == 10  # ten visits failed
    assert result.status == "completed", result.reason
