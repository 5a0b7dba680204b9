"""Leftovers of the graph layer, each found by reading it (each test failed before its fix):

- a child graph was compiled anew (its content key worked out: its whole JSON) on every run
  of it, once per plan step and per map branch;
- `run_node` took `visit=-1` and `visits` naming nodes the graph does not have;
- plan-execute took an empty plan that is not done, spent its three replans on nothing and
  completed with an empty answer.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from loomgraph import Agent
from loomgraph.authoring.library import load_graph
from loomgraph.errors import GraphError
from loomgraph.graph.compiled import compile_graph, runnable
from loomgraph.graph.spec import Graph
from loomgraph.models import ScriptedModel
from loomgraph.nodes.subgraph import ChildGraphNode
from loomgraph.protocols import ModelRequest
from loomgraph.strategies import Plan
from loomgraph.testing import UnknownNode, run_node


def respond(**answer: object) -> dict[str, Any]:
    """A model turn answering through the structured-output `respond` tool."""
    return {"tool_calls": [{"tool": "respond", "args": answer}]}


def planner(first: dict[str, Any], replans: list[dict[str, Any]]) -> Any:
    """Planner and replanner answers by prompt (the replans in order, the last one again
    when they run out); each step answers at once."""
    asked: list[str] = []

    def script(request: ModelRequest) -> Any:
        prompt = str(request.messages[0]["content"])
        if request.tool_choice != "respond":
            return "step done"
        if prompt.startswith("Make a short plan"):
            return respond(**first)
        asked.append(prompt)
        return respond(**replans[min(len(asked), len(replans)) - 1])

    return script


# ----------------------------------------------------------------- child graphs compiled once


async def test_a_plan_of_several_steps_compiles_its_step_graph_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each step of plan-execute runs `react`: its compiled form is looked up (its content
    key, the graph's JSON, worked out) once for the node, not once per step and run."""
    agents = [
        Agent("x", model=ScriptedModel(script), architecture="plan-execute")
        for script in (
            planner(
                {"steps": ["a", "b", "c"]},
                [{"steps": ["d", "e"]}, {"done": True, "answer": "done"}],
            )
            for _ in range(2)
        )
    ]
    keyed: list[str] = []
    memo = Graph.memo

    def counted(graph: Graph) -> Any:
        keyed.append(graph.name)
        return memo(graph)

    monkeypatch.setattr(Graph, "memo", counted)
    for agent in agents:  # two runs, of five steps each
        result = await agent.run("five steps")
        assert result.status == "completed", result.reason
        assert result.node_visits["execute_serial"] == 2
    assert keyed.count("react") <= 1, keyed  # was 10: once per step of each run


async def test_the_compiled_child_is_the_child_as_bound() -> None:
    """The node's child is compiled with its parent: the compiled form of the graph it
    resolved, the one compiling that graph gives (shared through `Graph.memo`)."""
    compiled = Agent("x", model=ScriptedModel([]), architecture="plan-execute").compiled
    node = compiled.nodes["execute_parallel"]
    assert isinstance(node, ChildGraphNode)
    assert node.compiled_child.graph == node.child
    assert node.compiled_child.hash == node.child.content_hash()
    assert node.compiled_child is compile_graph(node.child)


def test_a_graph_handed_to_run_is_compiled_as_it_reads_now() -> None:
    """`run_subgraph` still takes a `Graph` (a node kind of one's own): compiled as it reads
    when it runs, so an edited copy never runs as the graph it was copied from."""
    react = load_graph("react")
    compiled = compile_graph(react)
    assert runnable(compiled) is compiled and runnable(react) is compiled
    edited = react.model_copy(deep=True)
    edited.limits.max_visits = 2
    assert runnable(edited) is not compiled
    assert runnable(edited).graph.limits.max_visits == 2


# ----------------------------------------------------------------- run_node's visits


@pytest.mark.parametrize("visit", [0, -1])
async def test_run_node_refuses_a_visit_a_run_cannot_have(visit: int) -> None:
    with pytest.raises(GraphError, match=rf"visit={visit}.*from 1"):
        await run_node("react", "model", {"input": "hi"}, model=["hello"], visit=visit)


async def test_run_node_refuses_visits_of_a_node_the_graph_does_not_have() -> None:
    with pytest.raises(UnknownNode, match=r"visits.*'tool'.*no node 'tool'.*model, tools"):
        await run_node("react", "model", {"input": "hi"}, model=["hello"], visits={"tool": 2})


async def test_run_node_refuses_a_negative_visit_count() -> None:
    with pytest.raises(GraphError, match=r"visits\['tools'\]=-1"):
        await run_node("react", "model", {"input": "hi"}, model=["hello"], visits={"tools": -1})


async def test_run_node_takes_visits_of_the_graph_s_nodes() -> None:
    ran = await run_node(
        "react", "model", {"input": "hi"}, model=["hello"], visit=3, visits={"tools": 0}
    )
    assert ran.next == "END"


# ----------------------------------------------------------------- an empty plan


def test_a_plan_neither_done_nor_with_steps_is_refused() -> None:
    with pytest.raises(ValidationError, match="no steps"):
        Plan.model_validate({"steps": [], "parallel": True})
    assert Plan.model_validate({"done": True, "answer": "x"}).done
    assert Plan.model_validate({"steps": ["a"]}).steps == ["a"]


async def test_an_empty_plan_goes_back_to_the_model() -> None:
    asked: list[ModelRequest] = []
    answers = [respond(steps=[]), respond(steps=["a"])]

    def model(request: ModelRequest) -> Any:
        asked.append(request)
        return answers[len(asked) - 1]

    ran = await run_node("plan-execute", "plan", {"input": "t"}, model=model)
    assert ran.patch["plan"]["steps"] == ["a"]
    assert len(asked) == 2 and "no steps" in str(asked[1].messages[-1]["content"])


async def test_a_planner_that_only_makes_empty_plans_fails_the_run_at_the_plan() -> None:
    """Before: three replans of nothing, then `completed` with ''."""
    agent = Agent(
        "x",
        model=ScriptedModel(planner({"steps": []}, [{"steps": []}])),
        architecture="plan-execute",
    )
    result = await agent.run("t")
    assert result.status == "failed", (result.status, result.output)
    assert "plan" in result.reason and "no steps" in result.reason
    assert result.node_visits == {"plan": 1}


async def test_an_empty_replan_fails_the_run_at_the_replan() -> None:
    script = planner({"steps": ["a"]}, [{"steps": []}])
    agent = Agent("x", model=ScriptedModel(script), architecture="plan-execute")
    result = await agent.run("t")
    assert result.status == "failed", (result.status, result.output)
    assert "replan" in result.reason and "no steps" in result.reason
    assert result.node_visits.get("finish") is None
