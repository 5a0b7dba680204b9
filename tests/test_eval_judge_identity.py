"""Judges as an evaluation keeps them: each under a name of its own, its rubric in the
score's fingerprint, its usage kept with its scores, and a call that hangs timed out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.eval import (
    CustomEvaluator,
    Dataset,
    DatasetError,
    Evaluation,
    JudgeEvaluator,
    evaluate,
)
from loomgraph.eval.dataset import BUILT_IN_EVALUATORS
from loomgraph.eval.evaluators import DuplicateEvaluatorName, case_evaluators
from loomgraph.models.scripted import ScriptedModel
from loomgraph.protocols import ModelChunk, ModelRequest


def _judge(score: float, tokens: int = 50) -> ScriptedModel:
    reply = {"text": f'{{"score": {score}, "reason": "graded"}}'}
    return ScriptedModel(lambda r: {**reply, "usage": {"input_tokens": tokens, "output_tokens": 5}})


def _hi() -> Agent:
    return Agent("x", model=ScriptedModel(lambda r: "hi"))


def _two_cases(**extra: Any) -> Dataset:
    cases = [{"id": c, "input": c, "expect": {"answer": {"contains": "hi"}}} for c in ("a", "b")]
    return Dataset.model_validate({"name": "d", "cases": cases, **extra})


def test_two_judges_of_one_name_are_refused_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "cases.yaml"
    path.write_text(
        "name: d\n"
        "evaluators:\n"
        "  - {kind: judge, rubric: 'Is {{ answer }} helpful?'}\n"
        "  - {kind: judge, rubric: 'Is {{ answer }} polite?'}\n"
        "  - {kind: custom, call: 'checks:answer'}\n"
        "cases:\n"
        "  - {id: a, input: hi}\n"
    )
    with pytest.raises(DatasetError) as caught:
        Dataset.load(path)
    problems = {(p.rule, p.line): p.message for p in caught.value.problems}
    assert set(problems) == {("duplicate-evaluator", 4), ("duplicate-evaluator", 5)}
    assert (
        "'judge' (its default name) is taken by evaluators.0"
        in problems[("duplicate-evaluator", 4)]
    )
    assert "taken by a built-in evaluator" in problems[("duplicate-evaluator", 5)]


async def test_two_named_judges_keep_their_own_scores_and_usage() -> None:
    judges = [
        {"kind": "judge", "name": "helpful", "rubric": "Is {{ answer }} helpful?"},
        {"kind": "judge", "name": "polite", "rubric": "Is {{ answer }} polite?"},
    ]
    model = ScriptedModel(
        lambda r: {
            "text": '{"score": 1, "reason": "ok"}'
            if "helpful" in str(r.messages[0]["content"])
            else '{"score": 0, "reason": "rude"}',
            "usage": {"input_tokens": 100, "output_tokens": 5},
        }
    )
    report = await evaluate(_two_cases(evaluators=judges), {"s": _hi()}, judge_model=model)
    evaluators = report.summary("s").evaluators
    assert (evaluators["helpful"], evaluators["polite"]) == (1.0, 0.0)
    assert {n: u["usage"]["input_tokens"] for n, u in report.judge_usage.items()} == {
        "helpful": 200,
        "polite": 200,
    }


def test_an_evaluation_refuses_two_evaluators_of_one_name() -> None:
    judge = _judge(1.0)
    twins = [JudgeEvaluator(judge, "A {{ answer }}"), JudgeEvaluator(judge, "B {{ answer }}")]
    with pytest.raises(DuplicateEvaluatorName, match=r"'judge'.*give each its own name"):
        Evaluation(_two_cases(), {"s": _hi()}, twins)
    with pytest.raises(DuplicateEvaluatorName, match="'answer'"):
        Evaluation(
            _two_cases(),
            {"s": _hi()},
            [*case_evaluators([], lambda spec: judge), CustomEvaluator(bool, name="answer")],
        )


def test_the_built_in_names_the_dataset_refuses_are_the_built_in_evaluators() -> None:
    names = [e.name for e in case_evaluators([], lambda spec: _judge(1.0))]  # type: ignore[arg-type, return-value]
    assert tuple(names) == BUILT_IN_EVALUATORS


async def test_editing_a_python_judges_rubric_scores_the_kept_runs_again(tmp_path: Path) -> None:
    judge = ScriptedModel(
        lambda r: '{"score": %s, "reason": "r"}' % ("1" if "LENIENT" in str(r.messages) else "0")
    )
    state = tmp_path / "state.jsonl"
    first = await evaluate(
        _two_cases(),
        {"s": _hi()},
        evaluators=[JudgeEvaluator(judge, "LENIENT: {{ answer }}")],
        state_file=state,
    )
    assert first.summary("s").evaluators["judge"] == 1.0
    again = await evaluate(
        _two_cases(),
        {"s": _hi()},
        evaluators=[JudgeEvaluator(judge, "STRICT: {{ answer }}")],
        state_file=state,
    )
    assert again.summary("s").evaluators["judge"] == 0.0
    assert state.read_text().count('"started"') == 2  # scored again, not run again


async def test_the_judge_usage_of_a_rerun_report_counts_the_kept_scores(tmp_path: Path) -> None:
    state = tmp_path / "state.jsonl"
    judges = [{"kind": "judge", "rubric": "Is {{ answer }} good?"}]
    first = await evaluate(
        _two_cases(evaluators=judges), {"s": _hi()}, judge_model=_judge(0.9), state_file=state
    )
    again = await evaluate(
        _two_cases(evaluators=judges), {"s": _hi()}, judge_model=_judge(0.9), state_file=state
    )
    assert first.judge_usage["judge"]["usage"]["input_tokens"] == 100
    assert again.summary("s").evaluators == first.summary("s").evaluators
    assert again.judge_usage == first.judge_usage


class _Hanging:
    """A model whose reply never comes."""

    name = "hanging"

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        await asyncio.Event().wait()
        yield {"type": "text", "text": "never"}

    async def complete(self, request: ModelRequest) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        return None


async def test_a_judge_that_never_replies_is_a_failing_error_score() -> None:
    judge = JudgeEvaluator(_Hanging(), "grade {{ answer }}", timeout_s=0.01)  # type: ignore[arg-type]
    runs = await Evaluation(_two_cases(), {"s": _hi()}, [judge]).run()
    scores = [s for run in runs for s in run.scores if s.evaluator == "judge"]
    assert [(s.value, s.passed, s.error) for s in scores] == [(0.0, False, True)] * 2
    assert "no reply within timeout_s=0.01" in scores[0].reason
    assert judge.failed == 2 and judge.held == 0 and judge.usage.input_tokens > 0
    with pytest.raises(ValueError, match="timeout_s"):
        JudgeEvaluator(_Hanging(), "x", timeout_s=0)  # type: ignore[arg-type]


async def test_a_datasets_judge_takes_its_timeout() -> None:
    """`timeout_s` could be set only in Python: a dataset's judge waited 120 s on a hanging
    provider, whatever the file said."""
    judges = [{"kind": "judge", "rubric": "grade {{ answer }}", "timeout_s": 0.01}]
    report = await evaluate(
        _two_cases(evaluators=judges),
        {"s": _hi()},
        judge_model=_Hanging(),  # type: ignore[arg-type]
    )
    scores = [s for run in report.runs for s in run["scores"] if s["evaluator"] == "judge"]
    assert [s.get("error") for s in scores] == [True, True]
    assert "no reply within timeout_s=0.01" in scores[0]["reason"]
    with pytest.raises(ValueError, match="timeout_s"):
        _two_cases(evaluators=[{"kind": "judge", "rubric": "x", "timeout_s": 0}])
