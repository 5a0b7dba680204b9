"""`evaluate()`: a dataset under several strategies, scored and summarised in one call."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from loomgraph.agent.agent import Agent
from loomgraph.agent.model_specs import resolve_model
from loomgraph.eval.dataset import Dataset, EvaluatorSpec
from loomgraph.eval.evaluators import Evaluator, case_evaluators
from loomgraph.eval.judge import JudgeEvaluator
from loomgraph.eval.report import Report, build_report
from loomgraph.eval.runner import EvalRun, Evaluation
from loomgraph.protocols import Model

__all__ = ["evaluate"]


async def evaluate(
    dataset: Dataset,
    strategies: Mapping[str, Agent],
    *,
    evaluators: Sequence[Evaluator] | None = None,
    judge_model: str | Model | None = None,
    repeat: int = 1,
    concurrency: int = 4,
    state_file: str | Path | None = None,
    on_run: Callable[[EvalRun], None] | None = None,
) -> Report:
    """Run every case under every strategy, score each run and build the report.

    `evaluators` defaults to the built-in ones (answer, trajectory, not_called, bounds) plus
    the judges and custom functions the dataset names; a judge without its own `model` uses
    `judge_model`. See `Evaluation` for `repeat`, `concurrency` and `state_file`.
    """

    def judge(spec: EvaluatorSpec) -> Evaluator:
        name = spec.model or judge_model
        if name is None:
            raise ValueError(f"judge {spec.name or 'judge'!r} has no model; pass judge_model")
        return JudgeEvaluator(
            resolve_model(name),
            spec.rubric or "",
            name=spec.evaluator_name(),
            max_tokens=spec.max_tokens,
            **({} if spec.timeout_s is None else {"timeout_s": spec.timeout_s}),
        )

    chosen = (
        list(evaluators) if evaluators is not None else case_evaluators(dataset.evaluators, judge)
    )
    runs = await Evaluation(
        dataset,
        strategies,
        chosen,
        repeat=repeat,
        concurrency=concurrency,
        state_file=state_file,
        on_run=on_run,
    ).run()
    # The usage behind the scores the report holds, those kept from an earlier invocation
    # too, as the runs' usage is: each score carries its judge call's.
    return build_report(dataset.name, list(strategies), runs)
