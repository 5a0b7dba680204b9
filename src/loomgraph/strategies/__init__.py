"""Types and small steps the built-in strategy graphs use (plan-and-execute, reflexion).

They are ordinary public pieces — pydantic models named by import path in the YAML, and
functions for `function` nodes — so a strategy needs nothing from the core beyond node kinds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from loomgraph.strategies.lessons import LESSONS_BLOCK, MAX_LESSONS, remember_lessons

__all__ = [
    "LESSONS_BLOCK",
    "MAX_LESSONS",
    "Evaluation",
    "Plan",
    "final_answer",
    "remember_lessons",
]


class Plan(BaseModel):
    """A plan: steps to run next, or, when `done`, the final answer."""

    # A misspelt key (`step`, `paralel`) is an error the model is shown and retried on, not
    # an empty plan; the `respond` tool's schema says so too (additionalProperties: false).
    model_config = ConfigDict(extra="forbid")

    steps: list[str] = Field(
        default_factory=list,
        description="the steps still to do (at least one, unless done; blank steps are dropped)",
    )
    parallel: bool = Field(False, description="the steps do not depend on each other")
    done: bool = Field(False, description="the task is finished; `answer` is the answer")
    answer: str = Field("", description="the final answer (required when done)")

    @field_validator("steps")
    @classmethod
    def _drop_blank_steps(cls, steps: list[str]) -> list[str]:
        """The steps that name some work (a blank one would start an agent on no task)."""
        # Dropped rather than refused: a blank step carries nothing to lose, and a plan of
        # only blank steps is then a plan with no steps, refused below like any other.
        return [step for step in steps if step.strip()]

    @model_validator(mode="after")
    def _steps_or_done(self) -> Plan:
        # A plan with nothing to do that is not done would run no step and be asked again
        # (three replans of nothing, then an empty answer), and a done plan with no answer
        # would end the run `completed` with ''. Either way the planner (or replanner: one
        # type, one rule) is told and tries again; one that keeps at it fails its node
        # (`OutputValidationError`).
        if self.done and not self.answer.strip():
            raise ValueError(
                "a plan that is done has no answer: give the answer with done, "
                "or list the steps still to do"
            )
        if not self.done and not self.steps:
            raise ValueError(
                "a plan that is not done has no steps (blank steps do not count): "
                "list the steps still to do, or set done with the answer"
            )
        return self


class Evaluation(BaseModel):
    """How well an attempt did the task."""

    model_config = ConfigDict(extra="forbid")  # as Plan: `feedbak` is refused, not dropped

    score: float = Field(ge=0.0, le=1.0)
    feedback: str = ""


async def final_answer(state: Mapping[str, Any]) -> dict[str, Any]:
    """The run's answer: the plan's answer, else the last attempt or step result.

    A plan that is done always has its answer (`Plan` refuses one without); the last step's
    result is the answer of a plan-execute run whose replans ran out unfinished. (`async`:
    it never blocks, and a sync function node would take a worker thread.)"""
    plan = state.get("plan") or {}
    if plan.get("answer"):
        return {"output": plan["answer"]}
    for field in ("answer", "results"):
        value = state.get(field)
        if isinstance(value, list) and value:
            return {"output": value[-1]}
        if isinstance(value, str) and value:
            return {"output": value}
    return {"output": ""}
