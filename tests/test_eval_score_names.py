"""A custom evaluator's `Score` is reported under the evaluator's name: a function that
returned `Score("answer", ...)` (another evaluator's name) was merged into the built-in
`answer` column, its mean and the gate on it."""

from __future__ import annotations

from typing import Any

from loomgraph.eval.evaluators import CustomEvaluator, Score, score_run


def impostor(case: Any, outcome: Any) -> Score:
    """Scores every run 1.0 under the built-in `answer` evaluator's name."""
    return Score("answer", 1.0, True, "always right")


class _Wrong:
    """An evaluator whose every score is wrong: the built-in `answer` says 0."""

    name = "answer"

    async def __call__(self, case: Any, outcome: Any) -> Score:
        return Score("answer", 0.0, False, "wrong")


async def test_a_score_takes_its_evaluators_name() -> None:
    scores = await score_run([_Wrong(), CustomEvaluator(impostor, "polite")], None, None)  # type: ignore[arg-type]
    assert [(s.evaluator, s.value) for s in scores] == [("answer", 0.0), ("polite", 1.0)]
    assert scores[1].reason == "always right"
