"""Evaluation datasets: cases with an input and what a good run looks like, from YAML or JSONL."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from loomgraph.authoring.loader import nearest_line, parse_yaml, schema_problems
from loomgraph.errors import Problem, ProblemsError

__all__ = [
    "AnswerCheck",
    "Case",
    "Dataset",
    "DatasetError",
    "EvaluatorSpec",
    "Expectations",
    "ExpectedCall",
    "ToolTrajectory",
    "TrajectoryMode",
]


class DatasetError(ProblemsError, ValueError):
    """A dataset file is invalid; `problems` lists every problem found, with file and line."""

    subject = "dataset"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AnswerCheck(_Strict):
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


class ExpectedCall(_Strict):
    """One expected tool call: the tool's name and glob patterns for some of its arguments."""

    tool: str = Field(description="the tool's name (a glob pattern: `docs_*` matches)")
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="argument patterns: strings are globs against the argument as text; "
        "other values must be equal",
    )


class ToolTrajectory(_Strict):
    """The tool calls a good run makes."""

    mode: TrajectoryMode = TrajectoryMode.IN_ORDER
    calls: list[ExpectedCall]


class Expectations(_Strict):
    """What a good run of a case looks like."""

    answer: AnswerCheck | None = None
    tools: ToolTrajectory | None = None
    not_called: list[str] = Field(
        default_factory=list, description="tools (glob patterns) the run must never execute"
    )
    max_tokens: int | None = Field(None, ge=0, description="tokens one run may use")
    max_cost_usd: float | None = Field(None, ge=0, description="cost one run may have")
    max_latency_s: float | None = Field(None, gt=0, description="wall time one run may take")


class Case(_Strict):
    """One evaluation case."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    input: str = Field(min_length=1)
    session: str | None = None
    expect: Expectations = Field(default_factory=Expectations)
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class EvaluatorSpec(_Strict):
    """An evaluator the dataset adds to every case: an LLM judge or a Python function."""

    kind: str = Field(pattern=r"^(judge|custom)$")
    name: str | None = None
    # judge: a rubric (a Jinja2 template seeing `case`, `answer`, `tool_calls`) and a model.
    rubric: str | None = None
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1, description="tokens the judge may use in all")
    # custom: an import path MODULE:ATTR of `(case, outcome) -> Score | float | bool`.
    call: str | None = None


class Dataset(_Strict):
    """A named list of cases, and the evaluators added to every case."""

    schema_version: int = 1
    name: str = "dataset"
    description: str = ""
    evaluators: list[EvaluatorSpec] = Field(default_factory=list)
    cases: list[Case]

    @classmethod
    def load(cls, path: str | Path) -> Dataset:
        """Load and validate a dataset file (`.yaml`/`.yml`, or `.jsonl`: one case per line)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise DatasetError([Problem("unreadable-file", str(err), str(path))]) from None
        if path.suffix == ".jsonl":
            return _from_jsonl(text, path)
        data, lines, problems = parse_yaml(text, str(path))
        if data is None and problems:
            raise DatasetError(problems)
        return _validated(data, lines, problems, str(path))

    def case(self, case_id: str) -> Case:
        """The case with this id."""
        for case in self.cases:
            if case.id == case_id:
                return case
        raise KeyError(f"dataset {self.name!r} has no case {case_id!r}")


def _from_jsonl(text: str, path: Path) -> Dataset:
    cases: list[Any] = []
    lines: dict[tuple[str | int, ...], int] = {}
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            cases.append(json.loads(line))
        except json.JSONDecodeError as err:
            problems.append(Problem("json-syntax", err.msg, str(path), number))
            continue
        lines[("cases", len(cases) - 1)] = number
    data = {"name": path.stem, "cases": cases}
    return _validated(data, lines, problems, str(path))


def _validated(
    data: Any, lines: dict[tuple[str | int, ...], int], problems: list[Problem], file: str
) -> Dataset:
    if not isinstance(data, dict):
        problems.append(Problem("not-a-mapping", "a dataset must be a mapping", file, 1))
        raise DatasetError(problems)
    try:
        dataset = Dataset.model_validate(data)
    except ValidationError as err:
        raise DatasetError(problems + schema_problems(err, lines, file)) from None
    seen: dict[str, int] = {}
    for index, case in enumerate(dataset.cases):
        if case.id in seen:
            problems.append(
                Problem(
                    "duplicate-case",
                    f"case id {case.id!r} is used twice (first by cases.{seen[case.id]})",
                    file,
                    nearest_line(lines, ("cases", index)),
                )
            )
        seen.setdefault(case.id, index)
    for index, spec in enumerate(dataset.evaluators):
        missing = "rubric" if spec.kind == "judge" and not spec.rubric else None
        if spec.kind == "custom" and not spec.call:
            missing = "call"
        if missing:
            problems.append(
                Problem(
                    "evaluator",
                    f"evaluators.{index}: a {spec.kind} evaluator needs `{missing}`",
                    file,
                    nearest_line(lines, ("evaluators", index)),
                )
            )
    if problems:
        raise DatasetError(problems)
    return dataset


def dataset_json_schema() -> dict[str, Any]:
    """The JSON Schema of dataset files, for editors."""
    return Dataset.model_json_schema()
