"""The built-in strategies end to end on ScriptedModel, every edge, paths read from the journal."""

from __future__ import annotations

import json

import pytest

from loomgraph import Agent
from loomgraph.agent.checkpoints import NotACheckpoint
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest


async def lookup(topic: str) -> str:
    """Look a topic up."""
    return f"facts about {topic}"


def respond(**answer: object) -> dict[str, object]:
    return {"tool_calls": [{"tool": "respond", "args": answer}]}


def top_level(history: list) -> list[str]:  # type: ignore[type-arg]
    return [c.node for c in history if c.seq and "/" not in c.node]  # seq 0: the first state


def plan_execute_script(replans: list[dict[str, object]], first: dict[str, object]):  # type: ignore[no-untyped-def]
    """Planner and replanner answers by prompt; each step researched with one tool call."""
    asked_replan = []

    def script(request: ModelRequest) -> object:
        prompt = request.messages[0]["content"]
        if request.tool_choice == "respond":
            if prompt.startswith("Make a short plan"):
                return respond(**first)
            asked_replan.append(prompt)
            return respond(**replans[len(asked_replan) - 1])
        step = prompt.split("Do this step: ")[1].strip()
        if request.messages[-1]["role"] == "tool":
            return f"done {step}: {request.messages[-1]['content']}"
        return {"tool_calls": [{"tool": "lookup", "args": {"topic": step}}]}

    return script, asked_replan


async def test_plan_execute_parallel_then_serial_then_done() -> None:
    script, asked = plan_execute_script(
        [{"steps": ["compare"], "parallel": False}, {"done": True, "answer": "A beats B"}],
        {"steps": ["A", "B"], "parallel": True},
    )
    agent = Agent("x", model=ScriptedModel(script), tools=[lookup], architecture="plan-execute")
    result = await agent.run("Which is better, A or B?")
    assert result.status == "completed" and result.output == "A beats B"
    history = await agent.history(result.run_id)
    assert top_level(history) == [
        "plan",
        "execute_parallel",
        "replan",
        "execute_serial",
        "replan",
        "finish",
    ]
    assert history[-1].state["results"] == [
        "done A: facts about A",
        "done B: facts about B",
        "done compare: facts about compare",
    ]
    assert "done A: facts about A" in asked[0]  # the replanner saw the results
    assert {c.node for c in history if c.node.startswith("execute_parallel/")} == {
        "execute_parallel/0/model",
        "execute_parallel/0/tools",
        "execute_parallel/1/model",
        "execute_parallel/1/tools",
    }


async def test_plan_execute_serial_first_and_the_replan_cap() -> None:
    never_done = {"steps": ["more"], "parallel": True}
    script, asked = plan_execute_script([never_done] * 5, {"steps": ["X"], "parallel": False})
    agent = Agent("x", model=ScriptedModel(script), tools=[lookup], architecture="plan-execute")
    result = await agent.run("an endless task")
    assert result.status == "completed"
    history = await agent.history(result.run_id)
    assert top_level(history) == [
        "plan",
        "execute_serial",
        "replan",
        "execute_parallel",
        "replan",
        "execute_parallel",
        "replan",
        "finish",
    ]
    assert len(asked) == 3 and result.output == "done more: facts about more"


def reflexion_script(scores: list[float]):  # type: ignore[no-untyped-def]
    attempts: list[str] = []

    def script(request: ModelRequest) -> object:
        prompt = request.messages[0]["content"]
        if request.tool_choice == "respond":  # evaluate
            return respond(score=scores[len(attempts) - 1], feedback="cite a source")
        if prompt.startswith("Task:"):  # reflect
            return f"lesson {len(attempts)}: cite a source"
        attempts.append(prompt)
        return f"answer {len(attempts)}"

    return script, attempts


async def test_reflexion_reflects_once_then_passes() -> None:
    script, attempts = reflexion_script([0.3, 0.9])
    agent = Agent("x", model=ScriptedModel(script), architecture="reflexion")
    result = await agent.run("Explain tides.")
    assert result.status == "completed" and result.output == "answer 2"
    history = await agent.history(result.run_id)
    assert top_level(history) == [
        "attempt",
        "evaluate",
        "reflect",
        "remember",
        "attempt",
        "evaluate",
        "finish",
    ]
    assert "lesson 1: cite a source" in attempts[1] and "Lessons" not in attempts[0]
    assert history[-1].state["lessons"] == ["lesson 1: cite a source"]
    assert history[-1].state["evaluation"] == {"score": 0.9, "feedback": "cite a source"}


async def test_reflexion_stops_after_three_attempts() -> None:
    script, attempts = reflexion_script([0.1, 0.2, 0.3])
    agent = Agent("x", model=ScriptedModel(script), architecture="reflexion")
    result = await agent.run("Explain tides.")
    assert result.status == "completed" and result.output == "answer 3"
    assert len(attempts) == 3
    history = await agent.history(result.run_id)
    assert top_level(history).count("attempt") == 3 and top_level(history)[-1] == "finish"
    assert json.dumps(history[-1].state["lessons"]).count("lesson") == 2


def test_every_built_in_graph_has_its_diagram_in_the_docs() -> None:
    from pathlib import Path

    from loomgraph.authoring.library import builtin_names, load_graph

    docs = Path(__file__).parents[1] / "docs"
    text = (docs / "architectures.md").read_text()
    for name in builtin_names():
        svg = (docs / "graphs" / f"{name}.svg").read_text()
        assert all(node in svg for node in load_graph(name).nodes), name
        assert f"graphs/{name}.svg" in text, name


async def test_resume_and_fork_inside_a_subgraph() -> None:
    script, attempts = reflexion_script([0.3, 0.9, 0.9])
    down = {"on": True}

    def flaky(request: ModelRequest) -> object:
        # The second attempt's model call fails once, as a provider outage would.
        if (
            "Lessons" in request.messages[0]["content"]
            and down["on"]
            and request.tool_choice is None
        ):
            down["on"] = False
            raise ConnectionError("provider down")
        return script(request)

    agent = Agent("x", model=ScriptedModel(flaky), architecture="reflexion")
    failed = await agent.run("Explain tides.")
    assert failed.status == "failed" and "attempt/model" in failed.reason
    assert len(attempts) == 1
    done = await agent.resume(failed.run_id)
    assert done.status == "completed" and done.output == "answer 2"
    assert len(attempts) == 2  # attempt 1, its evaluation and the lesson were not redone
    history = await agent.history(failed.run_id)
    assert top_level(history) == [
        "attempt",
        "evaluate",
        "reflect",
        "remember",
        "attempt",
        "evaluate",
        "finish",
    ]

    # A step inside the subgraph is no checkpoint (a fork there would run the subgraph
    # again from its start under new keys): refused, naming the checkpoints. Forking at the
    # top-level checkpoint before it restarts the subgraph from the parent's state there:
    # here, the second attempt, with the lesson already in place.
    inner = next(c.seq for c in history if c.node == "attempt/model" and c.seq > 3)
    with pytest.raises(NotACheckpoint) as refused:
        await agent.fork(failed.run_id, at=inner)
    assert inner not in refused.value.checkpoints
    before = max(seq for seq in refused.value.checkpoints if seq < inner)
    forked = await agent.fork(failed.run_id, at=before)
    assert forked.status == "completed", forked.reason
    fork_history = await agent.history(forked.run_id)
    assert top_level(fork_history)[0] == "attempt"
    assert fork_history[1].state["lessons"] == ["lesson 1: cite a source"]
    assert "lesson 1" in attempts[2]  # the forked attempt ran again, with the lesson


def test_every_built_in_graph_passes_every_validation_rule() -> None:
    """Loading a built-in graph skips the flow rules (they need networkx): they are checked
    here instead, with every other rule."""
    from loomgraph.authoring.library import builtin_names, load_graph
    from loomgraph.authoring.validate import validate_graph

    for name in builtin_names():
        assert validate_graph(load_graph(name), flow=True) == [], name


def test_a_copy_of_a_built_in_graph_with_other_routes_is_checked_in_full() -> None:
    """Only the routes of a built-in graph (entry, nodes, on_error, edges and whether they
    have a condition) let a copy skip the flow rules: change one and they run."""
    from loomgraph.authoring.library import load_graph
    from loomgraph.authoring.loader import graph_from_data
    from loomgraph.errors import GraphValidationError

    same = load_graph("react").to_data()
    same["limits"] = {"max_visits": 7}
    for edge in same["edges"]:
        if edge.get("when"):
            edge["when"] = "messages | length > 1"  # another condition: the same routes
    assert graph_from_data(same).limits.max_visits == 7

    looped = load_graph("react").to_data()
    looped["edges"] = [{**e, "to": "tools"} if e["to"] == "END" else e for e in looped["edges"]]
    with pytest.raises(GraphValidationError) as raised:
        graph_from_data(looped)
    assert {p.rule for p in raised.value.problems} >= {"cycle-without-exit"}
