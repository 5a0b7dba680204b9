"""Evaluators: each scores one run of one case in [0, 1], with a reason."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Protocol

from loomgraph.eval.dataset import Case, EvaluatorSpec, TrajectoryMode
from loomgraph.eval.outcome import CaseOutcome
from loomgraph.eval.trajectory import match_trajectory
from loomgraph.graph.imports import import_object

__all__ = [
    "AnswerEvaluator",
    "BoundsEvaluator",
    "CustomEvaluator",
    "Evaluator",
    "NotCalledEvaluator",
    "Score",
    "TrajectoryEvaluator",
    "case_evaluators",
    "score_run",
]


@dataclass(frozen=True, slots=True)
class Score:
    """One evaluator's verdict on one run: a value in [0, 1], whether it passed, and why.

    `error` is True for the failing score an evaluator that raised (or gave no valid score)
    stands for: it is counted in the report, and scored again when the evaluation resumes."""

    evaluator: str
    value: float
    passed: bool
    reason: str = ""
    # Named sub-scores (a trajectory's precision and recall), reported beside the value.
    details: dict[str, float] = field(default_factory=dict)
    error: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.value <= 1.0:
            raise ValueError(f"evaluator {self.evaluator!r} gave {self.value}, not in [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped data."""
        return {
            "evaluator": self.evaluator,
            "value": self.value,
            "passed": self.passed,
            "reason": self.reason,
            "details": dict(self.details),
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Score:
        """A score from `to_dict()`'s shape."""
        return cls(**data)


class Evaluator(Protocol):
    """Scores a run of a case; None when it has nothing to say about this case."""

    name: str

    def __call__(self, case: Case, outcome: CaseOutcome) -> Awaitable[Score | None]:
        """Score `outcome`, a run of `case`."""
        ...


class AnswerEvaluator:
    """The answer's checks (exact, contains, regex, JSON Schema): the share that hold."""

    name = "answer"

    async def __call__(self, case: Case, outcome: CaseOutcome) -> Score | None:
        """Score the final answer against the case's answer checks."""
        check = case.expect.answer
        if check is None:
            return None
        answer = (outcome.answer or "").strip()
        failed: list[str] = []
        total = 0
        if check.exact is not None:
            total += 1
            if answer != check.exact.strip():
                failed.append(f"answer is not exactly {check.exact!r}")
        for text in check.contains:
            total += 1
            if text not in answer:
                failed.append(f"answer does not contain {text!r}")
        if check.regex is not None:
            total += 1
            if re.search(check.regex, answer) is None:
                failed.append(f"answer does not match /{check.regex}/")
        if check.json_schema is not None:
            total += 1
            problem = _schema_problem(answer, check.json_schema)
            if problem:
                failed.append(problem)
        if not total:
            return None  # `answer: {}`: nothing to check
        value = (total - len(failed)) / total
        return Score(self.name, value, not failed, "; ".join(failed) or "answer fits")


def _schema_problem(answer: str, schema: dict[str, Any]) -> str | None:
    import jsonschema

    try:
        data = json.loads(answer)
    except json.JSONDecodeError as err:
        return f"answer is not JSON ({err.msg})"
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "the answer"
    return f"{where}: {error.message}"


class TrajectoryEvaluator:
    """The executed tool calls against the expected ones: F1 of precision and recall."""

    name = "trajectory"

    async def __call__(self, case: Case, outcome: CaseOutcome) -> Score | None:
        """Score the run's tool calls against the case's trajectory."""
        spec = case.expect.tools
        if spec is None:
            return None
        if not spec.calls and spec.mode is not TrajectoryMode.EXACT:
            return None  # every one of no calls is found, in any order: nothing to check
        match = match_trajectory(spec, outcome.calls)
        p, r = match.precision, match.recall
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        reason = (
            f"{match.matched} of {match.expected} expected call(s) found ({spec.mode}) "
            f"among {match.actual} executed"
        )
        return Score(self.name, f1, match.passed, reason, {"precision": p, "recall": r})


class NotCalledEvaluator:
    """Safety: none of the forbidden tools was executed."""

    name = "not_called"

    async def __call__(self, case: Case, outcome: CaseOutcome) -> Score | None:
        """Score 1 when no executed call names a forbidden tool, else 0."""
        forbidden = case.expect.not_called
        if not forbidden:
            return None
        hits = [c for c in outcome.calls if any(fnmatchcase(c.tool, f) for f in forbidden)]
        if not hits:
            return Score(self.name, 1.0, True, "no forbidden tool executed")
        reason = f"executed forbidden tool(s): {', '.join(sorted({c.tool for c in hits}))}"
        unsure = sorted({c.tool for c in hits if c.uncertain})
        if unsure:  # begun, no outcome journaled: counted, since it may have run
            reason += f" ({', '.join(unsure)}: begun with no outcome journaled; it may have run)"
        return Score(self.name, 0.0, False, reason)


class BoundsEvaluator:
    """Budget and latency bounds: the share of the case's bounds the run kept."""

    name = "bounds"

    async def __call__(self, case: Case, outcome: CaseOutcome) -> Score | None:
        """Score tokens, cost and wall time against the case's bounds."""
        expect = case.expect
        checks = [
            ("tokens", expect.max_tokens, outcome.usage.total_tokens),
            ("cost_usd", expect.max_cost_usd, outcome.usage.cost_usd),
            ("latency_s", expect.max_latency_s, outcome.latency_s),
        ]
        bounded = [(n, limit, used) for n, limit, used in checks if limit is not None]
        if not bounded:
            return None
        over = [f"{n} {used:g} > {limit:g}" for n, limit, used in bounded if used > limit]
        value = (len(bounded) - len(over)) / len(bounded)
        return Score(self.name, value, not over, "; ".join(over) or "within bounds")


class CustomEvaluator:
    """A user's function `(case, outcome) -> Score | float | bool | None`, sync or async."""

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", "custom"))

    @classmethod
    def from_path(cls, path: str, name: str | None = None) -> CustomEvaluator:
        """The function named by an import path `MODULE:ATTR`, imported from the current
        folder first (as `--agent`'s); ImportError says where it looked."""
        module, _, attr = path.partition(":")
        if not module or not attr:
            raise ValueError(f"evaluator {path!r}: expected MODULE:ATTR")
        fn = import_object(path, what="evaluator")
        if not callable(fn):
            raise ImportError(f"evaluator {path!r} is a {type(fn).__name__}, not a function")
        return cls(fn, name or attr.rpartition(".")[2])

    async def __call__(self, case: Case, outcome: CaseOutcome) -> Score | None:
        """Call the function and turn what it returns into a Score."""
        value = self.fn(case, outcome)
        if inspect.isawaitable(value):
            value = await value
        if value is None or isinstance(value, Score):
            return value
        if isinstance(value, bool):
            return Score(self.name, float(value), value, "passed" if value else "failed")
        if not isinstance(value, int | float):
            raise TypeError(f"returned {value!r}, not a Score, number, bool or None")
        number = float(value)
        return Score(self.name, number, number >= 1.0, f"scored {number:g}")


async def score_run(
    evaluators: Sequence[Evaluator], case: Case, outcome: CaseOutcome
) -> list[Score]:
    """Every evaluator's score of `outcome` (those with nothing to say left out). An evaluator
    that raises, or gives no valid Score (a value outside [0, 1], NaN, another type), gives
    a failing score with the reason, marked `error`: one broken evaluator never stops the
    evaluation, nor hides what the others found."""
    scores: list[Score] = []
    for evaluator in evaluators:
        name = str(getattr(evaluator, "name", type(evaluator).__name__))
        try:
            score = await evaluator(case, outcome)
            if score is not None and not isinstance(score, Score):
                raise TypeError(f"returned {score!r}, not a Score or None")
        except Exception as err:
            reason = f"the evaluator failed: {type(err).__name__}: {err}"
            scores.append(Score(name, 0.0, False, reason[:500], error=True))
            continue
        if score is not None:
            scores.append(score)
    return scores


def case_evaluators(
    specs: Sequence[EvaluatorSpec], judge_factory: Callable[[EvaluatorSpec], Evaluator]
) -> list[Evaluator]:
    """The built-in evaluators, then those a dataset adds (judges and custom functions)."""
    evaluators: list[Evaluator] = [
        AnswerEvaluator(),
        TrajectoryEvaluator(),
        NotCalledEvaluator(),
        BoundsEvaluator(),
    ]
    for spec in specs:
        if spec.kind == "judge":
            evaluators.append(judge_factory(spec))
        else:
            evaluators.append(CustomEvaluator.from_path(spec.call or "", spec.name))
    return evaluators
