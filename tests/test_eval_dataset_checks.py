"""What a dataset is checked for when it loads: evaluator definitions that could only fail at
scoring time, hostile JSON Lines, empty datasets and the size limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loomgraph.eval import Dataset, DatasetError
from loomgraph.eval.dataset import MAX_DATASET_BYTES


def _load_error(tmp_path: Path, text: str, name: str = "cases.yaml") -> DatasetError:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DatasetError) as caught:
        Dataset.load(path)
    assert str(path) in str(caught.value)
    return caught.value


@pytest.mark.parametrize(
    ("text", "rule", "line", "says"),
    [
        (
            "cases:\n  - id: a\n    input: x\n    expect:\n      answer: {regex: '([a-'}\n",
            "answer-check",
            5,
            "regex",
        ),
        (
            "cases:\n  - id: a\n    input: x\n    expect:\n"
            "      answer:\n        json_schema: {type: 5}\n",
            "answer-check",
            6,
            "json_schema",
        ),
        (
            "evaluators:\n  - {kind: judge, model: echo, rubric: '{{ nosuch.var }}'}\n"
            "cases: [{id: a, input: x}]\n",
            "evaluator",
            2,
            "nosuch",
        ),
        (
            "evaluators:\n  - {kind: judge, model: echo, rubric: '{{ answer.__class__ }}'}\n"
            "cases: [{id: a, input: x}]\n",
            "evaluator",
            2,
            "reads '__class__'",
        ),
        (
            "evaluators:\n  - {kind: judge, model: echo, rubric: '{{ answer'}\n"
            "cases: [{id: a, input: x}]\n",
            "evaluator",
            2,
            "rubric",
        ),
        (
            "evaluators:\n  - {kind: custom, call: no_colon}\ncases: [{id: a, input: x}]\n",
            "evaluator",
            2,
            "MODULE:ATTR",
        ),
        (
            "evaluators:\n  - {kind: judge, rubric: r, call: 'x:y'}\ncases: [{id: a, input: x}]\n",
            "evaluator",
            2,
            "call",
        ),
        ("cases: []\n", "schema", 1, "at least one case"),
        ("schema_version: 99\ncases: [{id: a, input: x}]\n", "schema", 1, "99"),
    ],
    ids=[
        "regex",
        "json-schema",
        "rubric-var",
        "rubric-private",
        "rubric-syntax",
        "call",
        "judge-call",
        "empty",
        "v99",
    ],
)
def test_what_would_fail_at_scoring_time_fails_at_load(
    tmp_path: Path, text: str, rule: str, line: int, says: str
) -> None:
    error = _load_error(tmp_path, text)
    problem = next(p for p in error.problems if p.rule == rule)
    assert problem.line == line and says in problem.message


def test_a_rubric_may_use_every_variable_the_judge_gives(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    rubric = "{{ case.id }} {{ input }} {{ answer }} {{ tool_calls | length }} {{ status }}"
    path.write_text(
        f"evaluators:\n  - {{kind: judge, model: echo, rubric: '{rubric}'}}\n"
        "cases: [{id: a, input: x}]\n"
    )
    assert Dataset.load(path).evaluators[0].rubric == rubric


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ("[" * 100_000 + "]" * 100_000, "json-too-deep"),
        (
            '{"id":"a","input":"x","metadata":' + '{"a":' * 5000 + "1" + "}" * 5000 + "}",
            "json-too-deep",
        ),
        (
            '{"id":"a","input":"x","metadata":' + '{"a":' * 80 + "1" + "}" * 80 + "}",
            "json-too-deep",
        ),
        ('{"id":"a","input":"x","expect":{"max_tokens":' + "9" * 5000 + "}}", "json-syntax"),
    ],
    ids=["deep-list", "deep-object", "over-64-levels", "5000-digit-int"],
)
def test_hostile_json_lines_are_dataset_errors_with_their_line(
    tmp_path: Path, line: str, rule: str
) -> None:
    good = json.dumps({"id": "ok", "input": "x"})
    error = _load_error(tmp_path, f"{good}\n{line}\n", "c.jsonl")
    assert [(p.rule, p.line) for p in error.problems] == [(rule, 2)]


def test_a_json_line_may_hold_a_line_separator_inside_a_string(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"id": "a", "input": "one\u2028two"}, ensure_ascii=False) + "\n")
    assert Dataset.load(path).cases[0].input == "one\u2028two"


def test_an_empty_jsonl_file_is_a_dataset_error(tmp_path: Path) -> None:
    error = _load_error(tmp_path, "\n\n", "c.jsonl")
    assert [(p.rule, p.line) for p in error.problems] == [("schema", 1)]
    assert "at least one case" in error.problems[0].message


def test_one_size_limit_for_both_formats(tmp_path: Path) -> None:
    count = MAX_DATASET_BYTES // 40
    cases = [{"id": f"case-{i}", "input": "x" * 20} for i in range(count)]
    jsonl = "\n".join(json.dumps(c) for c in cases) + "\n"
    yaml = "cases:\n" + "".join(f"  - {{id: {c['id']}, input: {c['input']}}}\n" for c in cases)
    assert len(jsonl) > MAX_DATASET_BYTES and len(yaml) > MAX_DATASET_BYTES
    for name, text in [("c.jsonl", jsonl), ("c.yaml", yaml)]:
        error = _load_error(tmp_path, text, name)
        [problem] = error.problems
        assert problem.rule == "dataset-too-large"
        assert "dataset" in problem.message and "graph" not in problem.message
        assert str(MAX_DATASET_BYTES) in problem.message


def test_a_dataset_under_the_limit_loads_in_either_format(tmp_path: Path) -> None:
    cases = [{"id": f"case-{i}", "input": "x"} for i in range(200)]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(c) for c in cases) + "\n")
    (tmp_path / "c.yaml").write_text(json.dumps({"name": "c", "cases": cases}))
    assert len(Dataset.load(tmp_path / "c.jsonl").cases) == 200
    assert len(Dataset.load(tmp_path / "c.yaml").cases) == 200
