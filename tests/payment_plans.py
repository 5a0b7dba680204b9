"""Scripted payment runs for tests of composite graphs: a plan-and-execute model that plans
one payment per payee (each step's ReAct agent calls `pay(to=payee)` once and says so, and
the replan says the task is done), a ReAct payer, and the `pay` tool."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loomgraph import tool
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest

DONE = "all paid"
STEPS = ("ann", "bob", "cy")
AGAIN = ("dan", "eve")  # a second round of the plan: the map visited again

Plan = tuple[str, int, bool, bool]
"""The architecture, how many of STEPS it pays, whether in parallel, whether it plans AGAIN."""


@tool
def pay(to: str) -> str:
    """Pay someone."""
    return f"paid {to}"


def payer(payees: Sequence[str]) -> ScriptedModel:
    """A ReAct agent paying each payee in turn, one call per model turn."""
    calls = [{"tool_calls": [{"id": f"c-{s}", "tool": "pay", "args": {"to": s}}]} for s in payees]
    return ScriptedModel([*calls, DONE])


def plan_model(plan: Plan) -> ScriptedModel:
    """The model of `plan`: a ReAct payer, or a planner."""
    architecture, steps, parallel, again = plan
    if architecture == "plan-execute":
        return planner(STEPS[:steps], parallel, AGAIN if again else ())
    return payer(STEPS[:steps])


def respond(**answer: object) -> dict[str, Any]:
    """A structured answer (a plan, an evaluation) as the model's `respond` tool call."""
    return {"tool_calls": [{"tool": "respond", "args": answer}]}


def planner(
    payees: Sequence[str], parallel: bool, then: Sequence[str] = (), tool: str = "pay"
) -> ScriptedModel:
    """Plan paying `payees` (in parallel or not); each step pays its payee (with `tool`);
    then done — or, given `then`, the replan plans paying those the same way first (the map
    runs again)."""

    def turn(request: ModelRequest) -> Any:
        said = " ".join(str(m.get("content")) for m in request.messages)
        if "Results so far" in said:
            if then and f"paid {then[0]}" not in said:
                return respond(steps=list(then), parallel=parallel)
            return respond(done=True, answer=DONE)
        if "Do this step: " in said:
            step = said.split("Do this step: ")[1].split()[0]
            if any(m.get("role") == "tool" for m in request.messages):
                return f"paid {step}"
            return {"tool_calls": [{"id": f"c-{step}", "tool": tool, "args": {"to": step}}]}
        return respond(steps=list(payees), parallel=parallel)

    return ScriptedModel(turn)
