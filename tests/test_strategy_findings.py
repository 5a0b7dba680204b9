"""The built-in strategies end with the answer they worked out, never an empty one.

Checks:
- a plan that is `done` must carry a non-blank `answer`: `{"done": true}` goes back to the
  model (as a plan with no steps does), at `plan` and at `replan` alike, and a planner that
  keeps at it fails the run at that node instead of ending it `completed` with '';
- the last step's result is the answer only of a run whose replans ran out (3) unfinished;
- blank steps are dropped from a plan, so a plan of only blank steps is a plan with no steps
  (refused and shown to the model), and no ReAct agent is started on an empty step;
- `output_schema` after plan-execute or reflexion shows the model the run's answer before
  forcing `respond`, so the structured answer restates it; after react (whose answer is
  already the last assistant turn) the request is the conversation as it was.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from loomgraph import Agent
from loomgraph.models import ScriptedModel
from loomgraph.nodes.structured import RESTATE
from loomgraph.protocols import ModelRequest
from loomgraph.strategies import Plan, final_answer
from loomgraph.testing import run_node


def respond(**answer: object) -> dict[str, Any]:
    return {"tool_calls": [{"tool": "respond", "args": answer}]}


# ------------------------------------------------------------------ a done plan has its answer


@pytest.mark.parametrize("answer", [None, "", "   \n"])
def test_a_done_plan_without_an_answer_is_refused(answer: str | None) -> None:
    data: dict[str, Any] = {"done": True} if answer is None else {"done": True, "answer": answer}
    with pytest.raises(ValidationError, match="a plan that is done has no answer"):
        Plan.model_validate(data)
    assert Plan.model_validate({"done": True, "answer": "Paris"}).answer == "Paris"


async def test_a_planner_done_without_an_answer_is_asked_again_then_fails_at_plan() -> None:
    model = ScriptedModel([respond(done=True)] * 3)
    agent = Agent("x", model=model, architecture="plan-execute")
    result = await agent.run("What is the capital of France?")
    assert not (result.status == "completed" and result.output == ""), result.node_visits
    assert result.usage.model_calls == 3  # asked again, as a plan with no steps is
    assert result.status == "failed" and "plan" in result.reason


async def test_a_replan_done_without_an_answer_is_asked_again_as_a_plan_is() -> None:
    asked: list[ModelRequest] = []
    answers = [respond(done=True), respond(done=True, answer="Paris")]

    def replanner(request: ModelRequest) -> Any:
        asked.append(request)
        return answers[len(asked) - 1]

    state = {"input": "capital?", "plan": {"steps": ["look it up"]}, "results": ["Paris"]}
    ran = await run_node("plan-execute", "replan", state, model=replanner)
    assert ran.patch["plan"]["done"] and ran.patch["plan"]["answer"] == "Paris"
    assert len(asked) == 2
    assert "a plan that is done has no answer" in str(asked[1].messages[-1]["content"])


async def test_the_last_step_result_is_the_answer_only_when_replans_run_out() -> None:
    unfinished = {"steps": ["check"], "parallel": False, "done": False, "answer": ""}
    out = await final_answer({"plan": unfinished, "results": ["draft", "checked draft"]})
    assert out == {"output": "checked draft"}
    done = {"steps": [], "parallel": False, "done": True, "answer": "final"}
    assert await final_answer({"plan": done, "results": ["draft"]}) == {"output": "final"}


# ----------------------------------------------------------------------- blank steps


def test_blank_steps_are_dropped_and_only_blank_steps_are_no_steps() -> None:
    with pytest.raises(ValidationError, match="a plan that is not done has no steps"):
        Plan.model_validate({"steps": ["", "   "]})
    assert Plan.model_validate({"steps": ["search", " ", "summarise"]}).steps == [
        "search",
        "summarise",
    ]
    assert Plan.model_validate({"steps": ["", "\t"], "done": True, "answer": "x"}).steps == []


async def test_a_plan_of_blank_steps_goes_back_to_the_model() -> None:
    asked: list[ModelRequest] = []
    answers = [respond(steps=["", "   "], parallel=True), respond(steps=["look it up"])]

    def planner(request: ModelRequest) -> Any:
        asked.append(request)
        return answers[len(asked) - 1]

    ran = await run_node("plan-execute", "plan", {"input": "book a trip"}, model=planner)
    assert ran.patch["plan"]["steps"] == ["look it up"]
    assert len(asked) == 2


# ------------------------------------------------------- output_schema after a strategy


class Capital(BaseModel):
    city: str


ANSWER = "The capital is Paris."


def _structured_script(asked: list[ModelRequest]) -> Any:
    """Plan-execute's and reflexion's model turns; the structured_output step's requests
    are kept in `asked`."""

    def script(request: ModelRequest) -> Any:
        prompt = str(request.messages[-1]["content"])
        if request.tool_choice != "respond":
            return ANSWER  # reflexion's attempt, react's answer
        if prompt.startswith("Make a short plan"):
            return respond(done=True, answer=ANSWER)
        if prompt.startswith("Task:") and "Score" in prompt:
            return respond(score=0.9, feedback="")
        asked.append(request)  # the structured_output step
        return respond(city="Paris")

    return script


@pytest.mark.parametrize("architecture", ["plan-execute", "reflexion"])
async def test_output_schema_after_a_strategy_sees_the_runs_answer(architecture: str) -> None:
    asked: list[ModelRequest] = []
    agent = Agent("x", model=ScriptedModel(_structured_script(asked)), architecture=architecture)
    result = await agent.run("What is the capital of France?", output_schema=Capital)
    assert result.status == "completed", result.reason
    assert result.parsed == Capital(city="Paris")
    assert len(asked) == 1
    shown = [str(m.get("content")) for m in asked[0].messages]
    assert any(ANSWER in text for text in shown), shown
    # The answer is the agent's turn; the request still ends with a user turn.
    roles = [m["role"] for m in asked[0].messages]
    assert roles == ["user", "assistant", "user"], roles
    assert asked[0].messages[1]["content"] == ANSWER


async def test_output_schema_after_react_asks_over_the_conversation_ending_with_a_user_turn() -> (
    None
):
    asked: list[ModelRequest] = []
    agent = Agent("x", model=ScriptedModel(_structured_script(asked)))
    result = await agent.run("What is the capital of France?", output_schema=Capital)
    assert result.parsed == Capital(city="Paris")
    [request] = asked
    # The answer once, as react gave it; then a user turn (no model is sent a prefill).
    assert [(m["role"], m["content"]) for m in request.messages] == [
        ("user", "What is the capital of France?"),
        ("assistant", ANSWER),
        ("user", RESTATE),
    ]
