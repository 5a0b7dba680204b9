"""A scripted plan-and-execute model for tests of composite graphs: it plans one payment per
payee, each step's ReAct agent calls `pay(to=payee)` once and says so, and the replan says
the task is done."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest

DONE = "all paid"


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
