"""Plan-and-execute and reflexion take their plans and evaluations as they are meant: a
misspelt key is a validation error the model is shown, a plan done at once ends the run with
its answer, and the replanner sees the plan it revises.

Found by probing the strategies: `{"step": [...], "paralel": true}` was a valid, empty plan
(the run ended `completed` with ''), a first plan with `done` still went through an empty
execute and a replan (and lost its answer), and the replanner saw results without their steps.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from loomgraph import Agent
from loomgraph.authoring.library import load_graph
from loomgraph.graph.compiled import compile_graph
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest
from loomgraph.strategies import Evaluation, Plan
from loomgraph.testing import run_node


def respond(**answer: object) -> dict[str, Any]:
    return {"tool_calls": [{"tool": "respond", "args": answer}]}


@pytest.mark.parametrize(
    ("model", "data"),
    [(Plan, {"step": ["a"], "paralel": True}), (Evaluation, {"score": 0.2, "feedbak": "x"})],
)
def test_an_unknown_key_is_refused(model: type[Any], data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        model.model_validate(data)
    assert model.model_json_schema()["additionalProperties"] is False


async def test_a_misspelt_plan_goes_back_to_the_model() -> None:
    asked: list[ModelRequest] = []
    answers = [respond(step=["book flight", "book hotel"], paralel=True), respond(steps=["a", "b"])]

    def planner(request: ModelRequest) -> Any:
        asked.append(request)
        return answers[len(asked) - 1]

    ran = await run_node("plan-execute", "plan", {"input": "book a trip"}, model=planner)
    assert ran.patch["plan"]["steps"] == ["a", "b"]
    assert len(asked) == 2 and "paralel" in str(asked[1].messages[-1]["content"])
    assert asked[0].tools[0]["parameters"]["additionalProperties"] is False


async def test_a_misspelt_evaluation_goes_back_to_the_model() -> None:
    answers = [respond(score=0.2, feedbak="misses the hotel"), respond(score=0.2, feedback="ok")]
    ran = await run_node("reflexion", "evaluate", {"input": "t", "answer": "a"}, model=answers)
    assert ran.patch["evaluation"] == {"score": 0.2, "feedback": "ok"}


async def test_a_plan_done_at_once_ends_the_run_with_its_answer() -> None:
    model = ScriptedModel([respond(done=True, answer="Paris")])
    agent = Agent("x", model=model, architecture="plan-execute")
    result = await agent.run("What is the capital of France?")
    assert result.status == "completed" and result.output == "Paris"
    assert result.usage.model_calls == 1
    assert result.node_visits == {"plan": 1, "finish": 1}


async def test_the_replanner_sees_each_step_next_to_its_result() -> None:
    assert {"plan", "results"} <= set(compile_graph(load_graph("plan-execute")).reads["replan"])
    seen: list[str] = []

    def replanner(request: ModelRequest) -> Any:
        seen.append(request.messages[0]["content"])
        return respond(done=True, answer="x")

    state = {
        "input": "Do A, B and C",
        "plan": {"steps": ["do B", "do C"]},
        "results": ["A is done", "B is done", "C failed"],
    }
    await run_node("plan-execute", "replan", state, model=replanner)
    prompt = seen[0]
    assert 'Step "do B" of the last plan gave:\n- B is done\n' in prompt
    assert 'Step "do C" of the last plan gave:\n- C failed\n' in prompt
    # An earlier plan's result is shown too, under no step of this plan; every result is a
    # `- ` line under "Results so far", as before.
    assert prompt.startswith("Task: Do A, B and C\nResults so far:\n- A is done\nStep ")
    assert re.findall(r"^- (.*)$", prompt, re.M) == state["results"]
