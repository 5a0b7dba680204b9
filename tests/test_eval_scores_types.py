"""Scores hold built-in types: a numpy number, a numpy bool or another `numbers.Real` a
custom evaluator gives is converted (the state file and report.json are JSON), what cannot
be is an evaluator error, and a structured answer is scored as written, not ASCII-escaped."""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.eval import (
    CustomEvaluator,
    Dataset,
    Evaluation,
    Score,
    build_report,
    evaluate,
)
from loomgraph.models.scripted import ScriptedModel

DATA = Path(__file__).parent / "eval_data"


def _hi() -> Agent:
    return Agent("x", model=ScriptedModel(lambda r: "hi"))


def _two_cases() -> Dataset:
    cases = [{"id": c, "input": c, "expect": {"answer": {"contains": "hi"}}} for c in ("a", "b")]
    return Dataset.model_validate({"name": "d", "cases": cases})


class Ratio:
    """A real number of a library of the user's own: registered as a `numbers.Real`, as
    numpy registers its numbers, and not a float."""

    def __init__(self, value: float) -> None:
        self._value = value

    def __float__(self) -> float:
        return self._value

    def __repr__(self) -> str:
        return f"Ratio({self._value})"


numbers.Real.register(Ratio)


def test_a_score_converts_real_numbers_and_refuses_what_is_none() -> None:
    score = Score("similarity", Ratio(0.75), True, "cosine", {"cosine": Ratio(0.5), "how": "x"})
    assert type(score.value) is float and score.value == 0.75
    assert score.details == {"cosine": 0.5, "how": "x"}
    assert type(score.details["cosine"]) is float
    json.dumps(score.to_dict())
    with pytest.raises(TypeError, match="not a number"):
        Score("s", "0.5", True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a bool"):
        Score("s", 0.5, "yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a number"):
        Score("s", 0.5, True, details={"d": [1]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="not in"):
        Score("s", Ratio(float("nan")), True)


async def test_a_custom_score_of_a_real_type_is_recorded_and_written(tmp_path: Path) -> None:
    def similar(case: Any, outcome: Any) -> Score:
        return Score("similar", Ratio(0.75), True, "cosine", {"cosine": Ratio(0.75)})

    def ratio(case: Any, outcome: Any) -> Any:
        return Ratio(1.0)

    evaluators = [CustomEvaluator(similar), CustomEvaluator(ratio)]
    state = tmp_path / "state.jsonl"
    runs = await Evaluation(_two_cases(), {"s": _hi()}, evaluators, state_file=state).run()
    build_report("d", ["s"], runs).write_json(tmp_path / "report.json")
    data = json.loads((tmp_path / "report.json").read_text())
    assert [[(s["value"], s["passed"]) for s in r["scores"]] for r in data["runs"]] == [
        [(0.75, True), (1.0, True)]
    ] * 2


async def test_a_score_that_cannot_be_converted_is_an_evaluator_error(tmp_path: Path) -> None:
    def bad(case: Any, outcome: Any) -> Score:
        return Score("bad", 0.5, True, details={"vector": object()})  # type: ignore[dict-item]

    state = tmp_path / "state.jsonl"
    runs = await Evaluation(
        _two_cases(), {"s": _hi()}, [CustomEvaluator(bad)], state_file=state
    ).run()
    assert [(s.evaluator, s.value, s.error) for s in runs[0].scores] == [("bad", 0.0, True)]
    assert "not a number" in runs[0].scores[0].reason
    assert state.read_text().count('"finished"') == 2  # written: the evaluation went on


async def test_a_custom_score_holding_numpy_numbers_is_recorded(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")

    def numpy_score(case: Any, outcome: Any) -> Score:
        similarity = np.float32(0.75)
        return Score("similarity", similarity, similarity > 0.5, "cosine", {"cosine": similarity})

    state = tmp_path / "state.jsonl"
    runs = await Evaluation(
        _two_cases(), {"s": _hi()}, [CustomEvaluator(numpy_score)], state_file=state
    ).run()
    build_report("d", ["s"], runs).write_json(tmp_path / "report.json")
    data = json.loads((tmp_path / "report.json").read_text())
    assert [(r["scores"][0]["value"], r["scores"][0]["passed"]) for r in data["runs"]] == [
        (0.75, True)
    ] * 2


async def test_a_custom_evaluator_returning_a_numpy_bool_or_number_is_a_verdict() -> None:
    np = pytest.importorskip("numpy")
    check = CustomEvaluator(lambda case, outcome: np.float64(0.9) > 0.5, name="check")
    fails = CustomEvaluator(lambda case, outcome: np.bool_(False), name="fails")
    number = CustomEvaluator(lambda case, outcome: np.float32(0.25), name="number")
    [run, _] = await Evaluation(_two_cases(), {"s": _hi()}, [check, fails, number]).run()
    assert [(s.evaluator, s.value, s.passed, s.error) for s in run.scores] == [
        ("check", 1.0, True, False),
        ("fails", 0.0, False, False),
        ("number", 0.25, False, False),
    ]


async def test_a_structured_answer_with_text_outside_ascii_fits_its_contains_check() -> None:
    dataset = Dataset.model_validate(
        {
            "name": "structured",
            "cases": [
                {
                    "id": "zurich",
                    "input": "Weather in Zürich?",
                    "expect": {"answer": {"contains": ["Zürich", "☀"], "json_schema": {}}},
                }
            ],
        }
    )
    agent = Agent("x", model="echo", architecture=str(DATA / "structured.yaml"))
    report = await evaluate(dataset, {"mine": agent})
    [run] = report.runs
    assert run["outcome"]["status"] == "completed"
    assert run["passed"], run["scores"]
    assert json.loads(run["outcome"]["answer"])["city"] == "Zürich"
