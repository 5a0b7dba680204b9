"""Evaluation datasets: cases with an input and what a good run looks like, from YAML, JSON or
JSON Lines."""

from __future__ import annotations

import re
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from loomgraph.authoring.loader import nearest_line, parse_yaml, schema_problems
from loomgraph.errors import Problem, ProblemsError
from loomgraph.eval.dataset_checks import RUBRIC_VARIABLES, rubric_problems, schema_problem
from loomgraph.eval.jsonl import parse_json, parse_jsonl
from loomgraph.protocols import storable
from loomgraph.protocols.safe_yaml import key_first

__all__ = [
    "BUILT_IN_EVALUATORS",
    "JSONL_SUFFIXES",
    "JSON_SUFFIXES",
    "MAX_DATASET_BYTES",
    "RUBRIC_VARIABLES",
    "YAML_SUFFIXES",
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

# The largest dataset file, YAML, JSON or JSON Lines alike (YAML is parsed in pure Python).
MAX_DATASET_BYTES = 1_000_000
SCHEMA_VERSION = 1
# The evaluators every evaluation of a dataset has: a dataset's own may not take these names.
BUILT_IN_EVALUATORS = ("answer", "trajectory", "not_called", "bounds")
# The file suffixes `Dataset.load` reads, and how.
YAML_SUFFIXES = (".yaml", ".yml")
JSON_SUFFIXES = (".json",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
_SUFFIXES = YAML_SUFFIXES + JSON_SUFFIXES + JSONL_SUFFIXES


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


def _journaled_id(value: str) -> str:
    """`value` when a journal can store it as an id (it names the runs of the cases), else
    a ValueError saying why: found at load, not when the first run is journaled."""
    if storable(value):
        return value
    why = "a NUL character" if "\x00" in value else "a lone surrogate (not valid Unicode text)"
    raise ValueError(f"it holds {why}, which no journal can store in the ids of the runs")


# Text that becomes part of the ids of runs (a session id, the user ids of `run_user_id`).
JournaledId = Annotated[str, AfterValidator(_journaled_id)]


class Case(_Strict):
    """One evaluation case."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    input: str = Field(min_length=1)
    session: JournaledId | None = None
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


class Dataset(_Strict):
    """A named list of cases, and the evaluators added to every case."""

    schema_version: int = SCHEMA_VERSION
    name: JournaledId = "dataset"
    description: str = ""
    evaluators: list[EvaluatorSpec] = Field(default_factory=list)
    cases: list[Case] = Field(min_length=1)

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {value} is not one this loomgraph reads (it reads "
                f"{SCHEMA_VERSION})"
            )
        return value

    @field_validator("cases", mode="before")
    @classmethod
    def _some_cases(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("a dataset needs at least one case")
        return value

    @classmethod
    def load(cls, path: str | Path) -> Dataset:
        """Load and validate a dataset file (YAML: `.yaml`/`.yml`; JSON: `.json`; JSON Lines,
        one case per line: `.jsonl`/`.ndjson`) of at most MAX_DATASET_BYTES, UTF-8 (a byte
        order mark, as Windows tools write, is read past)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in _SUFFIXES:
            known = ", ".join(_SUFFIXES)
            message = (
                f"a dataset file is YAML, JSON or JSON Lines, named by its suffix ({known}); "
                f"{path.suffix or 'no suffix'} is not one of them"
            )
            raise DatasetError([Problem("unknown-format", message, str(path))])
        try:
            with path.open("rb") as file:
                raw = file.read(MAX_DATASET_BYTES + 1)
            text = raw.decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as err:
            raise DatasetError([Problem("unreadable-file", str(err), str(path))]) from None
        if len(raw) > MAX_DATASET_BYTES:
            message = (
                f"a dataset file may hold at most {MAX_DATASET_BYTES} bytes; this one is larger"
            )
            raise DatasetError([Problem("dataset-too-large", message, str(path))])
        if suffix in JSONL_SUFFIXES:
            cases, lines, problems = parse_jsonl(text, str(path))
            data = None if cases is None else {"name": path.stem, **cases}
        elif suffix in JSON_SUFFIXES:
            data, lines, problems = parse_json(text, str(path))
        else:
            data, value_lines, problems = parse_yaml(text, str(path))
            lines = key_first(value_lines)  # a problem about a key at the key's own line
        if data is None and problems:
            raise DatasetError(problems)
        return _validated(data, lines, problems, str(path))

    def case(self, case_id: str) -> Case:
        """The case with this id."""
        try:
            return self._by_id[case_id]
        except KeyError:
            raise KeyError(f"dataset {self.name!r} has no case {case_id!r}") from None

    @cached_property
    def _by_id(self) -> dict[str, Case]:
        # Built once (an evaluation looks a case up per run); a cached property, not a
        # private attribute, so two equal datasets stay equal. The first of a repeated id.
        found: dict[str, Case] = {}
        for case in self.cases:
            found.setdefault(case.id, case)
        return found


def _validated(
    data: Any, lines: dict[tuple[str | int, ...], int], problems: list[Problem], file: str
) -> Dataset:
    if not isinstance(data, dict):
        problems.append(Problem("not-a-mapping", "a dataset must be a mapping", file, 1))
        raise DatasetError(problems)
    try:
        dataset = Dataset.model_validate(data)
    except ValidationError as err:
        found = [
            Problem(p.rule, p.message.replace(": Value error, ", ": ", 1), p.file, p.line)
            for p in schema_problems(err, lines, file)
        ]
        # Every problem at once: the cases and evaluators that are valid on their own are
        # checked as in a valid file (a duplicate id, a regex that does not compile).
        cases = _valid_items(Case, data.get("cases"))
        specs = _valid_items(EvaluatorSpec, data.get("evaluators"))
        found.extend(_item_problems(cases, specs, lines, file))
        raise DatasetError(problems + found) from None
    problems.extend(
        _item_problems(
            list(enumerate(dataset.cases)), list(enumerate(dataset.evaluators)), lines, file
        )
    )
    if problems:
        raise DatasetError(problems)
    return dataset


_M = TypeVar("_M", bound=BaseModel)


def _valid_items(model: type[_M], items: Any) -> list[tuple[int, _M]]:
    """The items of a list that are each a valid `model`, with their indexes."""
    if not isinstance(items, list):
        return []
    valid = []
    for index, item in enumerate(items):
        try:
            valid.append((index, model.model_validate(item)))
        except ValidationError:
            continue  # (its problems are the whole file's schema problems)
    return valid


def _item_problems(
    cases: list[tuple[int, Case]],
    specs: list[tuple[int, EvaluatorSpec]],
    lines: dict[tuple[str | int, ...], int],
    file: str,
) -> list[Problem]:
    """What the schema cannot see: cases sharing an id, answer checks that cannot work,
    evaluators that cannot be made or share a name."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, case in cases:
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
    for index, case in cases:
        problems.extend(_answer_problems(case, lines, file, index))
    for index, spec in specs:
        where = nearest_line(lines, ("evaluators", index))
        problems.extend(
            Problem("evaluator", f"evaluators.{index}: {message}", file, where)
            for message in _evaluator_problems(spec)
        )
    problems.extend(_name_problems(specs, lines, file))
    return problems


def _answer_problems(
    case: Case, lines: dict[tuple[str | int, ...], int], file: str, index: int
) -> list[Problem]:
    """The answer checks that could only fail when a run is scored: a regular expression
    that does not compile, a JSON Schema that is not one or whose `$ref`s cannot be
    followed."""
    check = case.expect.answer
    if check is None:
        return []
    at = ("cases", index, "expect", "answer")
    problems: list[Problem] = []
    if check.regex is not None:
        try:
            re.compile(check.regex)
        except (re.error, OverflowError, RecursionError) as err:
            where = nearest_line(lines, (*at, "regex"))
            message = f"cases.{index}.expect.answer.regex is not a regular expression: {err}"
            problems.append(Problem("answer-check", message, file, where))
    if check.json_schema is not None:
        why = schema_problem(check.json_schema)
        if why is not None:
            where = nearest_line(lines, (*at, "json_schema"))
            message = f"cases.{index}.expect.answer.json_schema {why}"
            problems.append(Problem("answer-check", message, file, where))
    return problems


def _evaluator_problems(spec: EvaluatorSpec) -> list[str]:
    """What is wrong with an evaluator the dataset adds: a missing or misplaced key, a
    rubric that is no template or names what the judge does not give, a malformed `call`."""
    problems: list[str] = []
    if spec.kind == "judge":
        if not spec.rubric:
            problems.append("a judge evaluator needs `rubric`")
        else:
            problems.extend(rubric_problems(spec.rubric))
        if spec.call is not None:
            problems.append("a judge evaluator takes no `call` (that is a custom evaluator's)")
        return problems
    if not spec.call:
        problems.append("a custom evaluator needs `call`")
    else:
        module, _, attr = spec.call.partition(":")
        if not module or not attr:
            problems.append(f"`call` {spec.call!r} is not an import path MODULE:ATTR")
    misplaced = [k for k in ("rubric", "model", "max_tokens") if getattr(spec, k) is not None]
    if misplaced:
        problems.append(f"a custom evaluator takes no {', '.join(f'`{k}`' for k in misplaced)}")
    return problems


def _name_problems(
    specs: list[tuple[int, EvaluatorSpec]], lines: dict[tuple[str | int, ...], int], file: str
) -> list[Problem]:
    """Evaluators sharing a name (a built-in's included): their scores would be merged."""
    problems: list[Problem] = []
    seen: dict[str, str] = {name: "a built-in evaluator" for name in BUILT_IN_EVALUATORS}
    for index, spec in specs:
        name = spec.evaluator_name()
        if name in seen:
            named = "" if spec.name else " (its default name)"
            message = (
                f"evaluators.{index}: the name {name!r}{named} is taken by {seen[name]}; "
                "give each evaluator its own `name`, or their scores are merged"
            )
            where = nearest_line(lines, ("evaluators", index))
            problems.append(Problem("duplicate-evaluator", message, file, where))
        seen.setdefault(name, f"evaluators.{index}")
    return problems


def dataset_json_schema() -> dict[str, Any]:
    """The JSON Schema of dataset files, for editors."""
    return Dataset.model_json_schema()
