"""Evaluation datasets: every rule gives a typed error naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loomgraph.eval import Dataset, DatasetError, dataset_json_schema
from loomgraph.eval.dataset import TrajectoryMode

EXAMPLE = Path(__file__).parent.parent / "examples" / "eval" / "cases.yaml"


def _write(tmp_path: Path, text: str, name: str = "cases.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_worked_example_loads_with_its_features() -> None:
    dataset = Dataset.load(EXAMPLE)
    assert dataset.name == "travel-desk" and len(dataset.cases) >= 20
    modes = {c.expect.tools.mode for c in dataset.cases if c.expect.tools}
    assert modes == set(TrajectoryMode)
    assert any(c.expect.not_called for c in dataset.cases)
    assert dataset.case("weather-two-cities").expect.answer.contains == ["windy", "sunny"]


@pytest.mark.parametrize(
    ("text", "rule", "line", "says"),
    [
        ("cases:\n  - id: a\n    input: hi\n    colour: red\n", "schema", 4, "colour"),
        ("cases:\n  - id: a\n", "schema", 2, "input"),
        (
            "cases:\n  - id: a\n    input: x\n    expect:\n"
            "      tools: {mode: sideways, calls: []}\n",
            "schema",
            5,
            "mode",
        ),
        (
            "cases:\n  - id: a\n    input: x\n  - id: a\n    input: y\n",
            "duplicate-case",
            4,
            "twice",
        ),
        ("cases:\n  - id: [\n", "yaml-syntax", None, ""),
        ("evaluators:\n  - kind: judge\ncases: [{id: a, input: x}]\n", "evaluator", 2, "rubric"),
        ("evaluators:\n  - kind: custom\ncases: [{id: a, input: x}]\n", "evaluator", 2, "call"),
        ("cases:\n  - id: bad id\n    input: x\n", "schema", 2, "id"),
    ],
)
def test_each_bad_dataset_names_rule_and_line(
    tmp_path: Path, text: str, rule: str, line: int | None, says: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(DatasetError) as caught:
        Dataset.load(path)
    problem = next(p for p in caught.value.problems if p.rule == rule)
    assert problem.file == str(path)
    if line is not None:
        assert problem.line == line
    assert says in problem.message
    assert str(path) in str(caught.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = "cases:\n  - id: a\n    input: x\n    bogus: 1\n  - id: b\n"
    with pytest.raises(DatasetError) as caught:
        Dataset.load(_write(tmp_path, text))
    assert len(caught.value.problems) == 2


def test_a_schema_problem_hides_none_of_the_checks_of_valid_cases(tmp_path: Path) -> None:
    """Found by a probe of docs/eval.md ("every problem is reported at once"): one case
    with a misspelt key hid a duplicate id, a regex that does not compile, a `$ref` that
    does not resolve and a judge without a rubric; fixing it brought them out one round
    later."""
    text = (
        "evaluators:\n  - {kind: judge}\n  - {kind: nonsense}\n"
        "cases:\n"
        "  - {id: ok-1, input: hi}\n"
        "  - {id: ok-1, input: again}\n"
        "  - {id: r, input: x, expect: {answer: {regex: '([a-z'}}}\n"
        "  - {id: w, input: x, expect: {answer: {json_schema: {$ref: 'http://x.example/s'}}}}\n"
        "  - {id: t, inptu: typo}\n"
    )
    with pytest.raises(DatasetError) as caught:
        Dataset.load(_write(tmp_path, text))
    found = {(p.rule, p.line) for p in caught.value.problems}
    assert {("schema", 3), ("schema", 9)} <= found  # the bad evaluator and the typo
    assert ("evaluator", 2) in found  # the judge without a rubric (a valid spec otherwise)
    assert {("duplicate-case", 6), ("answer-check", 7), ("answer-check", 8)} <= found


def test_jsonl_cases_with_line_numbers(tmp_path: Path) -> None:
    good = {"id": "a", "input": "weather in Paris", "tags": ["w"]}
    path = _write(tmp_path, json.dumps(good) + "\n\n" + json.dumps({"id": "b"}) + "\n", "c.jsonl")
    with pytest.raises(DatasetError) as caught:
        Dataset.load(path)
    assert [(p.rule, p.line) for p in caught.value.problems] == [("schema", 3)]
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(DatasetError) as caught:
        Dataset.load(path)
    assert [(p.rule, p.line) for p in caught.value.problems] == [("json-syntax", 2)]
    path.write_text(json.dumps(good) + "\n")
    assert Dataset.load(path).cases[0].tags == ["w"]


def test_unreadable_file_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unreadable-file"):
        Dataset.load(tmp_path / "missing.yaml")


def test_json_schema_for_editors_forbids_unknown_keys() -> None:
    schema = dataset_json_schema()
    assert schema["additionalProperties"] is False
    assert "cases" in schema["required"]
    assert schema["$defs"]["Case"]["additionalProperties"] is False
