"""A user writing their own strategies (graphs in YAML and Python): what a probe found (each
test failed before its fix). The steps and types the graphs name live in
tests/user_graph_steps.py.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.authoring.library import load_graph
from loomgraph.errors import GraphValidationError
from loomgraph.graph.spec import Graph, Limits
from loomgraph.models import ScriptedModel


async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


ADD_TURN = {"tool_calls": [{"tool": "add", "args": {"a": 1, "b": 2}}]}


def respond(**answer: Any) -> dict[str, Any]:
    """A model turn answering through the structured-output `respond` tool."""
    return {"tool_calls": [{"tool": "respond", "args": answer}]}


# ----------------------------------------------------------------- wrong results


async def test_editing_a_loaded_built_in_graph_changes_no_other_agent() -> None:
    """A user takes `load_graph("react")` to make a tight variant and sets its
    `limits.max_visits = 2`. `load_graph` returns the process-wide cached object, so every
    other Agent built on `architecture="react"` (and every graph whose subgraph is `react`,
    such as plan-execute's steps) now stops after two visits: a run that needs seven ends
    `limit_reached`. Expected: the user's copy is theirs (or the built-in graph refuses to
    be edited)."""
    mine = load_graph("react")
    before = mine.limits.max_visits
    try:
        with contextlib.suppress(TypeError, ValueError):  # a frozen graph is a fix too
            mine.limits.max_visits = 2
        other = Agent(
            "x", model=ScriptedModel([ADD_TURN] * 3 + ["done"]), tools=[add], architecture="react"
        )
        result = await other.run("add three times")
    finally:
        object.__setattr__(mine.limits, "max_visits", before)  # leave the cache as it was
    assert result.status == "completed", f"another agent's react graph changed: {result.reason}"


async def test_a_copied_graph_runs_with_its_own_limits() -> None:
    """A user makes a variant of a graph the pydantic way,
    `load_graph("react").model_copy(update={"limits": Limits(max_visits=3)}, deep=True)`,
    and runs it. The copy carries the original's private compiled graph (`Graph._compiled`)
    and its `_validated` flag, so the run uses the original's limits (50) and runs to the
    end; a copy with a bad `entry` is not validated either. Expected: the copy runs as it
    reads, ending `limit_reached` after 3 visits."""
    Agent("x", model=ScriptedModel([]), architecture="react")  # compiled once, as any app does
    mine = load_graph("react").model_copy(update={"limits": Limits(max_visits=3)}, deep=True)
    assert mine.limits.max_visits == 3
    agent = Agent(
        "x", model=ScriptedModel([ADD_TURN] * 5 + ["done"]), tools=[add], architecture=mine
    )
    result = await agent.run("add five times")
    assert result.status == "limit_reached", f"ran with the original's limits: {result.status}"


async def test_a_copy_with_a_bad_entry_is_validated() -> None:
    """The copy shared the original's `_validated` flag, so a copy whose `entry` names no
    node was not checked and failed at run time. Expected: refused when the Agent is built."""
    Agent("x", model=ScriptedModel([]), architecture="react")
    mine = load_graph("react").model_copy(update={"entry": "nowhere"}, deep=True)
    with pytest.raises(GraphValidationError, match="nowhere"):
        Agent("x", model=ScriptedModel([]), architecture=mine)


async def test_editing_a_graph_after_building_an_agent_changes_only_later_agents() -> None:
    """An Agent is a configuration value: editing the Graph it was built on leaves it as it
    was built, while an Agent built after the edit runs (and is validated) as it now reads."""
    mine = load_graph("react")
    built = Agent(
        "x", model=ScriptedModel([ADD_TURN] * 3 + ["done"]), tools=[add], architecture=mine
    )
    mine.limits.max_visits = 2
    assert (await built.run("add three times")).status == "completed"
    later = Agent(
        "x", model=ScriptedModel([ADD_TURN] * 3 + ["done"]), tools=[add], architecture=mine
    )
    assert (await later.run("add three times")).status == "limit_reached"
    mine.entry = "nowhere"
    with pytest.raises(GraphValidationError, match="nowhere"):
        Agent("x", model=ScriptedModel([]), architecture=mine)


async def test_a_graph_running_react_as_its_steps_keeps_its_own_react() -> None:
    """plan-execute runs each step as the `react` graph: a user's loaded `react`, edited, is
    not the one it finds; a deep copy of plan-execute, compiled before, runs too (a compiled
    form was deep-copied with the graph, and its templates cannot be)."""
    Agent("x", model=ScriptedModel([]), architecture="plan-execute")
    mine = load_graph("react")
    mine.limits.max_visits = 2
    copied = load_graph("plan-execute").model_copy(deep=True)
    script = [respond(steps=["add"]), *[ADD_TURN] * 3, "3", respond(done=True, answer="3")]
    for architecture in ("plan-execute", copied):
        agent = Agent("x", model=ScriptedModel(script), tools=[add], architecture=architecture)
        result = await agent.run("add three times")
        assert result.status == "completed", result.reason
        assert result.output == "3"


def test_a_graph_that_is_not_json_is_still_refused_by_validation() -> None:
    """Keying what is known of a graph by its content must not turn validation's clear
    error into a serialization error: a Python object among a node's params is reported."""
    graph = Graph(
        name="x",
        entry="a",
        nodes={"a": {"kind": "function", "call": object()}},
        edges=[{"from": "a", "to": "END"}],
    )
    with pytest.raises(GraphValidationError, match="call"):
        load_graph(graph)
