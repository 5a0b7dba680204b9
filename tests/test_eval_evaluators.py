"""Evaluators, trajectories, the judge and the paired statistics."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from loomgraph.eval import (
    AnswerEvaluator,
    BoundsEvaluator,
    CallRecord,
    Case,
    CaseOutcome,
    CustomEvaluator,
    JudgeEvaluator,
    NotCalledEvaluator,
    Score,
    TrajectoryEvaluator,
)
from loomgraph.eval.dataset import ToolTrajectory
from loomgraph.eval.report import bootstrap_interval, compare, percentile
from loomgraph.eval.trajectory import match_trajectory
from loomgraph.models.scripted import ScriptedModel, Turn
from loomgraph.protocols import Usage


def _case(**expect: Any) -> Case:
    return Case.model_validate({"id": "c", "input": "task", "expect": expect})


def _outcome(
    answer: str = "", calls: tuple[tuple[str, dict[str, Any]], ...] | list[Any] = (), **kw: Any
) -> CaseOutcome:
    records = [CallRecord(tool, args) for tool, args in calls]
    return CaseOutcome("c", "s", 0, "run", "completed", answer, records, **kw)


def _score(evaluator: Any, case: Case, outcome: CaseOutcome) -> Score | None:
    result: Score | None = asyncio.run(evaluator(case, outcome))
    return result


def test_answer_checks_score_the_share_that_hold() -> None:
    case = _case(answer={"exact": "42", "contains": ["4", "9"], "regex": r"^\d+$"})
    score = _score(AnswerEvaluator(), case, _outcome(" 42 "))
    assert score is not None and score.value == 0.75 and not score.passed
    assert "does not contain '9'" in score.reason
    assert _score(AnswerEvaluator(), _case(), _outcome("x")) is None


def test_answer_json_schema_names_the_field() -> None:
    schema = {"type": "object", "required": ["city"], "properties": {"temp": {"type": "number"}}}
    case = _case(answer={"json_schema": schema})
    good = _score(AnswerEvaluator(), case, _outcome('{"city": "Paris", "temp": 21}'))
    assert good is not None and good.passed
    bad = _score(AnswerEvaluator(), case, _outcome('{"city": "Paris", "temp": "warm"}'))
    assert bad is not None and not bad.passed and "temp" in bad.reason
    text = _score(AnswerEvaluator(), case, _outcome("sunny"))
    assert text is not None and "not JSON" in text.reason


def _trajectory(mode: str, *calls: dict[str, Any]) -> ToolTrajectory:
    return ToolTrajectory.model_validate({"mode": mode, "calls": list(calls)})


W_PARIS = ("get_weather", {"city": "Paris"})
W_BERLIN = ("get_weather", {"city": "Berlin"})
ORDER = ("order_status", {"order_id": "A17"})


def test_exact_trajectory_counts_extra_calls_against_precision() -> None:
    spec = _trajectory("exact", {"tool": "get_weather"}, {"tool": "order_status"})
    same = match_trajectory(spec, [CallRecord(*W_PARIS), CallRecord(*ORDER)])
    assert same.passed and same.precision == same.recall == 1.0
    three = [CallRecord(*W_PARIS), CallRecord(*W_BERLIN), CallRecord(*ORDER)]
    extra = match_trajectory(spec, three)
    assert not extra.passed and extra.recall == 1.0 and extra.precision == pytest.approx(2 / 3)
    swapped = match_trajectory(spec, [CallRecord(*ORDER), CallRecord(*W_PARIS)])
    assert not swapped.passed and swapped.recall == 0.5


def test_in_order_is_a_subsequence_and_any_order_a_matching() -> None:
    calls = [CallRecord(*ORDER), CallRecord(*W_BERLIN), CallRecord(*W_PARIS)]
    in_order = _trajectory("in_order", {"tool": "get_weather"}, {"tool": "order_status"})
    found = match_trajectory(in_order, calls)
    assert not found.passed and found.matched == 1
    # The general pattern must not take the only call the specific one fits (augmenting path).
    any_order = _trajectory(
        "any_order",
        {"tool": "get_weather", "args": {"city": "*"}},
        {"tool": "get_weather", "args": {"city": "Berlin"}},
    )
    both = match_trajectory(any_order, [CallRecord(*W_BERLIN), CallRecord(*W_PARIS)])
    assert both.passed and both.matched == 2


def test_argument_patterns_globs_and_values() -> None:
    spec = _trajectory(
        "in_order", {"tool": "convert_*", "args": {"source": "E?R", "amount": 100.0}}
    )
    ok = [CallRecord("convert_currency", {"source": "EUR", "amount": 100.0, "target": "USD"})]
    assert match_trajectory(spec, ok).passed
    wrong_value = [CallRecord("convert_currency", {"source": "EUR", "amount": 99.0})]
    assert not match_trajectory(spec, wrong_value).passed
    missing = [CallRecord("convert_currency", {"amount": 100.0})]
    assert not match_trajectory(spec, missing).passed


def test_trajectory_score_is_f1_with_details() -> None:
    case = _case(tools={"mode": "in_order", "calls": [{"tool": "get_weather"}]})
    score = _score(TrajectoryEvaluator(), case, _outcome(calls=[W_PARIS, ORDER]))
    assert score is not None and score.passed
    assert score.details == {"precision": 0.5, "recall": 1.0}
    assert score.value == pytest.approx(2 / 3)
    none = _score(TrajectoryEvaluator(), case, _outcome())
    assert none is not None and none.value == 0.0 and not none.passed


def test_not_called_and_bounds() -> None:
    case = _case(not_called=["cancel_*"], max_tokens=100, max_latency_s=1.0)
    hit = _score(NotCalledEvaluator(), case, _outcome(calls=[("cancel_order", {})]))
    assert hit is not None and hit.value == 0.0 and "cancel_order" in hit.reason
    clean = _score(NotCalledEvaluator(), case, _outcome(calls=[ORDER]))
    assert clean is not None and clean.passed
    over = _outcome(usage=Usage(input_tokens=90, output_tokens=20), latency_s=0.5)
    bounds = _score(BoundsEvaluator(), case, over)
    assert bounds is not None and bounds.value == 0.5 and "tokens 110 > 100" in bounds.reason


async def _async_check(case: Case, outcome: CaseOutcome) -> float:
    return 0.25


def test_custom_evaluators_by_function_and_import_path() -> None:
    case, outcome = _case(), _outcome("x")
    assert _score(CustomEvaluator(lambda c, o: True, "yes"), case, outcome) == Score(
        "yes", 1.0, True, "passed"
    )
    quarter = _score(CustomEvaluator(_async_check), case, outcome)
    assert quarter is not None and quarter.value == 0.25 and not quarter.passed
    by_path = CustomEvaluator.from_path("tests.test_eval_evaluators:_async_check")
    assert by_path.name == "_async_check"
    with pytest.raises(ValueError, match="not in"):
        _score(CustomEvaluator(lambda c, o: 2.0, "big"), case, outcome)


def test_the_judge_scores_counts_its_usage_and_stops_at_its_cap() -> None:
    seen: list[str] = []

    def reply(request: Any) -> Turn:
        seen.append(request.messages[0]["content"])
        return Turn(
            text='Sure: {"score": 0.8, "reason": "close"}',
            usage=Usage(input_tokens=100, output_tokens=20),
        )

    judge = JudgeEvaluator(
        ScriptedModel(reply), "Grade {{ answer }} for {{ input }}", max_tokens=200
    )
    first = _score(judge, _case(), _outcome("Paris is sunny"))
    assert first == Score("judge", 0.8, True, "close")
    assert seen == ["Grade Paris is sunny for task"]
    assert _score(judge, _case(), _outcome("again")) is not None
    assert judge.usage.total_tokens == 240
    assert _score(judge, _case(), _outcome("third")) is None and judge.skipped == 1
    assert len(seen) == 2


def test_a_judge_reply_without_a_score_fails_with_the_reply() -> None:
    judge = JudgeEvaluator(ScriptedModel(lambda r: Turn(text="looks fine")), "{{ answer }}")
    score = _score(judge, _case(), _outcome("x"))
    assert score is not None and score.value == 0.0 and "looks fine" in score.reason
    with pytest.raises(ValueError, match="rubric"):
        JudgeEvaluator(ScriptedModel([]), "{% if %}")


def test_paired_statistics_against_a_hand_computed_case() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10.0], 95) == 10.0
    scores = {
        "c1": {"a": 0.5, "b": 1.0},
        "c2": {"a": 1.0, "b": 1.0},
        "c3": {"a": 0.0, "b": 0.25},
        "c4": {"a": 1.0},  # not paired: left out
    }
    result = compare(scores, "a", "b")
    assert result.cases == 3
    assert result.mean_diff == pytest.approx((0.5 + 0.0 + 0.25) / 3)
    assert result.per_case == {"c1": 0.5, "c2": 0.0, "c3": 0.25}
    assert 0.0 <= result.low <= result.mean_diff <= result.high <= 0.5
    assert bootstrap_interval([0.2] * 5) == pytest.approx((0.2, 0.2))
    # Same seed, same interval: reports are repeatable.
    assert compare(scores, "a", "b") == result
