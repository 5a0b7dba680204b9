"""Evaluation datasets: cases with an input and what a good run looks like, from YAML, JSON or
JSON Lines."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError, field_validator

from loomgraph.authoring.loader import parse_yaml, schema_problems
from loomgraph.errors import Problem, ProblemsError
from loomgraph.eval.cases import (
    BUILT_IN_EVALUATORS,
    AnswerCheck,
    Case,
    EvaluatorSpec,
    Expectations,
    ExpectedCall,
    JournaledId,
    Strict,
    ToolTrajectory,
    TrajectoryMode,
)
from loomgraph.eval.dataset_checks import RUBRIC_VARIABLES, item_problems
from loomgraph.eval.jsonl import parse_json, parse_jsonl
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
# The file suffixes `Dataset.load` reads, and how.
YAML_SUFFIXES = (".yaml", ".yml")
JSON_SUFFIXES = (".json",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
_SUFFIXES = YAML_SUFFIXES + JSON_SUFFIXES + JSONL_SUFFIXES


class DatasetError(ProblemsError, ValueError):
    """A dataset file is invalid; `problems` lists every problem found, with file and line."""

    subject = "dataset"


class Dataset(Strict):
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
        found.extend(item_problems(cases, specs, lines, file))
        raise DatasetError(problems + found) from None
    problems.extend(
        item_problems(
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


def dataset_json_schema() -> dict[str, Any]:
    """The JSON Schema of dataset files, for editors."""
    return Dataset.model_json_schema()
