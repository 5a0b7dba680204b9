"""Types and small steps the built-in strategy graphs use (plan-and-execute, reflexion).

They are ordinary public pieces — pydantic models named by import path in the YAML, and
functions for `function` nodes — so a strategy needs nothing from the core beyond node kinds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from loomgraph.graph.node_context import NodeContext


class Plan(BaseModel):
    """A plan: steps to run next, or, when `done`, the final answer."""

    steps: list[str] = Field(default_factory=list, description="the steps still to do")
    parallel: bool = Field(False, description="the steps do not depend on each other")
    done: bool = Field(False, description="the task is finished; `answer` is the answer")
    answer: str = ""


class Evaluation(BaseModel):
    """How well an attempt did the task."""

    score: float = Field(ge=0.0, le=1.0)
    feedback: str = ""


def final_answer(state: Mapping[str, Any]) -> dict[str, Any]:
    """The run's answer: the plan's answer, else the last attempt or step result."""
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


LESSONS_BLOCK = "lessons"
MAX_LESSONS = 20


async def remember_lessons(state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
    """Keep the run's lessons in the user's working memory, when the agent has a memory store,
    so later runs start with them; journaled, so a resume does not write them twice."""
    lessons = list(state.get("lessons") or [])
    memory = ctx.deps.memory
    get_blocks = getattr(memory, "get_blocks", None)
    set_block = getattr(memory, "set_block", None)
    if not lessons or get_blocks is None or set_block is None:
        return {}

    async def write() -> dict[str, Any]:
        kept = (await get_blocks(ctx.user_id)).get(LESSONS_BLOCK, "")
        old = [line[2:] for line in kept.splitlines() if line.startswith("- ")]
        merged = list(dict.fromkeys([*old, *lessons]))[-MAX_LESSONS:]
        await set_block(ctx.user_id, LESSONS_BLOCK, "\n".join(f"- {m}" for m in merged))
        return {"lessons": merged}

    await ctx.effect("memory:lessons", {"lessons": lessons}, write)
    return {}
