"""What an evaluation case says: its input and what a good run of it looks like (the answer,
the tool calls, the bounds), and the evaluators a dataset adds to every case."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from loomgraph.protocols import storable

__all__ = [
    "BUILT_IN_EVALUATORS",
    "AnswerCheck",
    "Case",
    "EvaluatorSpec",
    "Expectations",
    "ExpectedCall",
    "JournaledId",
    "ToolTrajectory",
    "TrajectoryMode",
]

# The evaluators every evaluation of a dataset has: a dataset's own may not take these names.
BUILT_IN_EVALUATORS = ("answer", "trajectory", "not_called", "bounds")


class Strict(BaseModel):
    """A dataset's part: unknown keys refused, never changed once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class AnswerCheck(Strict):
    """What the final answer must be: any of these that are set must all hold."""

    exact: str | None = Field(None, description="the answer, exactly (surrounding space ignored)")
    contains: list[str] = Field(default_factory=list, description="texts the answer contains")
    regex: str | None = Field(None, description="a regular expression the answer matches")
    json_schema: dict[str, Any] | None = Field(
        None, description="a JSON Schema the answer, parsed as JSON, must satisfy"
    )

    @field_validator("contains", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class TrajectoryMode(StrEnum):
    """How the expected tool calls are matched against the calls the run made."""

    EXACT = "exact"  # the same calls, in the same order, nothing else
    IN_ORDER = "in_order"  # the expected calls appear in this order; others may come between
    ANY_ORDER = "any_order"  # the expected calls appear, in any order


class ExpectedCall(Strict):
    """One expected tool call: the tool's name and glob patterns for some of its arguments."""

    tool: str = Field(description="the tool's name (a glob pattern: `docs_*` matches)")
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="argument patterns: strings are globs against the argument as text; "
        "other values must be equal",
    )


class ToolTrajectory(Strict):
    """The tool calls a good run makes."""

    mode: TrajectoryMode = TrajectoryMode.IN_ORDER
    calls: list[ExpectedCall]


class Expectations(Strict):
    """What a good run of a case looks like."""

    answer: AnswerCheck | None = None
    tools: ToolTrajectory | None = None
    not_called: list[str] = Field(
        default_factory=list, description="tools (glob patterns) the run must never execute"
    )
    max_tokens: int | None = Field(None, ge=0, description="tokens one run may use")
    max_cost_usd: float | None = Field(None, ge=0, description="cost one run may have")
    max_latency_s: float | None = Field(None, gt=0, description="wall time one run may take")


def _journaled_id(value: str) -> str:
    """`value` when a journal can store it as an id (it names the runs of the cases), else
    a ValueError saying why: found at load, not when the first run is journaled."""
    if storable(value):
        return value
    why = "a NUL character" if "\x00" in value else "a lone surrogate (not valid Unicode text)"
    raise ValueError(f"it holds {why}, which no journal can store in the ids of the runs")


# Text that becomes part of the ids of runs (a session id, the user ids of `run_user_id`).
JournaledId = Annotated[str, AfterValidator(_journaled_id)]


class Case(Strict):
    """One evaluation case."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    input: str = Field(min_length=1)
    session: JournaledId | None = None
    expect: Expectations = Field(default_factory=Expectations)
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class EvaluatorSpec(Strict):
    """An evaluator the dataset adds to every case: an LLM judge or a Python function."""

    kind: str = Field(pattern=r"^(judge|custom)$")
    name: str | None = None
    # judge: a rubric (a Jinja2 template seeing `case`, `answer`, `tool_calls`) and a model.
    rubric: str | None = None
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1, description="tokens the judge may use in all")
    timeout_s: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="seconds a judge call may take (120)"
    )
    # custom: an import path MODULE:ATTR of `(case, outcome) -> Score | float | bool`.
    call: str | None = None

    def evaluator_name(self) -> str:
        """The name its scores are reported under: `name`, else `judge` for a judge and
        the function's name (ATTR of `call`) for a custom evaluator."""
        if self.name:
            return self.name
        if self.kind == "judge":
            return "judge"
        return (self.call or "custom").partition(":")[2].rpartition(".")[2] or "custom"
